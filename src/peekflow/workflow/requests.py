"""Resource requests of the workflow's jobs: mem_mb, runtime (minutes) and cpus_per_task, from the config and the
job's inputs. `Requests(config).resources(rule)` is what a rule's `resources:` holds (workflow/rules/common.smk:
job_resources); `request(rule, wildcards, input, threads)` computes one job's.

Each rule's work is estimated from the numbers it grows with (images, prototypes, steps, channels, a detector's bank)
as seconds of one CPU thread, MB, whether it runs a network and its data loader workers; peekflow.workflow.resources
holds the formulas, their per-unit costs and the conversion into a request. A rule without an estimate of its own
reads and writes result files. In a dry run the inputs do not exist yet: counts come from the config (generated sets,
prototypes, steps) and from the image folders; existing inputs' sizes only raise them. device: cuda sizes network
rules for a GPU; auto and cpu for the CPU (a job never runs out of time for lack of a GPU).

Takes the validated config (defaults filled in) after peekflow.workflow.replicas.expand, as the Snakefile holds it.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Callable, NamedTuple

from peekflow.models.layers import layer_channels
from peekflow.ood.base import detector_class
from peekflow.workflow import preflight
from peekflow.workflow import resources as costs
from peekflow.workflow.config_checks import neuron_dataset, ood_runs, ranks_by_relevance, run_method

KEYS = ("mem_mb", "runtime", "cpus_per_task")
BATCH = 64  # images per batch where the command's batch is not configured (quality, probing, relevance, PGD)


class Work(NamedTuple):
    seconds: float  # of one CPU thread
    mb: float
    network: bool = False  # runs a network: sized for a GPU where the config's device is cuda
    workers: int = 0  # data loader processes beside the job's own


_ESTIMATES: dict[str, Callable] = {}


def estimates(*rules: str):
    """Method decorator: the work estimate of the jobs of `rules`, (self, wildcards, input) -> Work."""

    def decorate(fn):
        _ESTIMATES.update(dict.fromkeys(rules, fn))
        return fn

    return decorate


def existing_mb(paths) -> float:
    """MB of the input files that exist (a dry run's are mostly missing: 0)."""
    return sum(os.path.getsize(p) for p in paths if os.path.isfile(p)) / 1e6


def score_gpus(run: str) -> int:
    """GPUs of the score_ood jobs of OOD run `run`: 1 where its method's detector says a GPU speeds it up
    (Detector.gpu_helps), else 0. The SLURM profile's `gpu:` of score_ood calls this."""
    return int(detector_class(run_method(run)).gpu_helps)


def shards_of(w) -> int:
    """The shard count of a sharded job (its `shards` wildcard); 1 for a job that does all of it."""
    return int(getattr(w, "shards", 1))


class Requests:
    def __init__(self, config: dict):
        self.config = config

    def resources(self, rule: str) -> dict[str, Callable]:
        """`resources: **job_resources("<rule>")`: mem_mb, runtime and cpus_per_task computed when the job is
        planned."""
        return {key: lambda wildcards, input, threads, attempt, key=key: self.request(rule, wildcards, input, threads,
                                                                                      attempt)[key] for key in KEYS}

    def request(self, rule: str, wildcards, input, threads: int = 1, attempt: int = 1) -> dict[str, int]:
        work = self.work(rule, wildcards, input)
        return costs.request(work.seconds, work.mb, threads=threads, gpu=work.network and self.on_gpu(),
                             workers=work.workers, attempt=attempt)

    def work(self, rule: str, wildcards, input) -> Work:
        estimate = _ESTIMATES.get(rule)
        return estimate(self, wildcards, input) if estimate else Work(*costs.files(existing_mb(input)))

    def on_gpu(self) -> bool:
        return str(self.config["device"]).startswith("cuda")

    # --- the counts and sizes the estimates grow with
    def model_config(self, model: str) -> dict:
        return self.config["models"][model]

    @functools.cache
    def dataset_images(self, name: str) -> int:
        """Images of data set `name`: datasets.<name>.images where given, else as the checks before any job count
        them (a generated split's plan, a folder's images; 0 where the folder is not there yet). Cached: a folder is
        listed once per Snakemake process."""
        return self.config["datasets"][name].get("images") or preflight.dataset_size(self.config, name) or 0

    def generated_images(self, generated: str) -> int:
        gen = self.config["generate"]["sets"][generated]
        return sum(gen["splits"].values()) * len(gen.get("classes", [None]))

    def image_side(self, model: str, dataset: str | None = None) -> int:
        """The side of the images `model` sees from `dataset` (default: its training set): its crop or resize, else
        the generated size; else 224."""
        m = self.model_config(model)
        dataset = dataset or m.get("train", {}).get("dataset")
        return preflight.input_size(self.config, dataset, m) or self.config.get("generate", {}).get("image_size", 224)

    @functools.cache
    def layer_channels(self, model: str, layer: str) -> int:
        """Channels (or token width) of a layer of `model`, from one forward pass of the built architecture."""
        m = self.model_config(model)
        net = preflight.abstract_model(m["arch"], m["num_classes"], m.get("arch_kwargs")).eval()
        return layer_channels(net, layer, self.image_side(model))

    def prototype_count(self, model: str, method: str) -> int:
        block = self.config["prototypes"]["methods"][method]
        return block.get("n") or block["per_class"] * self.model_config(model)["num_classes"]

    def prototype_side(self, model: str, method: str) -> int:
        return self.config["prototypes"]["methods"][method]["size"] or self.image_side(model)

    def neuron_channels(self, w) -> int:
        chosen = self.config["neurons"]["patches"]["channels"]
        return len(chosen) if isinstance(chosen, list) else self.layer_channels(w.model, w.layer)

    def emergence_images(self, model: str) -> int:
        return self.config["emergence"]["per_class"] * self.model_config(model)["num_classes"]

    # --- the work of each rule
    @estimates("generate_dataset")
    def _generate(self, w, i) -> Work:
        return Work(*costs.generation(self.generated_images(w.generated)))

    @estimates("train_model")
    def _train(self, w, i) -> Work:
        train = self.model_config(w.model)["train"]
        s = train["settings"]
        n = self.dataset_images(train["dataset"])
        side = self.image_side(w.model, train["dataset"])
        return Work(*costs.training(n, s["epochs"], side, s["batch_size"]), True, s["num_workers"])

    @estimates("extract_features", "extract_feature_shard")
    def _extract(self, w, i) -> Work:
        n = math.ceil(self.dataset_images(w.dataset) / shards_of(w))
        extract = self.config["extract"]
        return Work(*costs.forward(n, self.image_side(w.model, w.dataset), extract["batch_size"]), True,
                    extract["num_workers"])

    @estimates("merge_feature_shards")
    def _merge_features(self, w, i) -> Work:
        stores = self.dataset_images(w.dataset) * costs.STORE_KB_PER_IMAGE / 1000
        return Work(*costs.files(max(existing_mb(i), stores), held=0))

    @estimates("extract_prototype_features")
    def _extract_prototypes(self, w, i) -> Work:
        n, side = self.prototype_count(w.model, w.proto), self.prototype_side(w.model, w.proto)
        return Work(*costs.forward(n, side, self.config["extract"]["batch_size"]), True)

    def prototype_work(self, model: str, method: str, shards: int) -> Work:
        block = self.config["prototypes"]["methods"][method]
        n = math.ceil(self.prototype_count(model, method) / shards)
        return Work(*costs.synthesis(n, block["steps"], self.prototype_side(model, method), block["batch_size"]), True)

    @estimates("synthesize_prototypes", "synthesize_prototype_shard", "synthesize_caricatures")
    def _synthesize(self, w, i) -> Work:
        return self.prototype_work(w.model, w.proto, shards_of(w))

    @estimates("synthesize_caricature_shard")  # its files name no {proto}: the rule is the caricatures' own
    def _caricature_shard(self, w, i) -> Work:
        return self.prototype_work(w.model, "caricature", shards_of(w))

    @estimates("evaluate_prototypes")
    def _evaluate_prototypes(self, w, i) -> Work:
        n, side = self.prototype_count(w.model, w.proto), self.prototype_side(w.model, w.proto)
        return Work(*costs.forward(n, side, BATCH, 2), True)

    @estimates("probe_prototypes")
    def _probe(self, w, i) -> Work:
        n = self.prototype_count(w.model, self.config["probing"]["prototypes"])
        return Work(*costs.forward(n, self.image_side(w.probe), BATCH), True)

    @estimates("score_ood")
    def _score(self, w, i) -> Work:
        method = ood_runs(self.config)[w.method][0]
        detector = detector_class(method)
        n_eval = self.dataset_images(w.dataset)
        if detector.needs_images:  # ODIN: forward, backward, forward per image
            side = self.image_side(w.model, w.dataset)
            return Work(*costs.forward(n_eval, side, self.config["extract"]["batch_size"], 3), detector.gpu_helps)
        n_fit = 0
        if detector.needs_fit:  # on the ID training store, or a prototype bank (common.smk: score_inputs)
            bank = detector.prototype_bank
            n_fit = self.prototype_count(w.model, bank) if bank else self.dataset_images(self.config["ood"]["id_train"])
        m = self.model_config(w.model)
        dim = self.layer_channels(w.model, m["penultimate"])
        work = costs.scoring(n_fit, n_eval, dim, m["num_classes"], pairwise=detector.pairwise)
        return Work(*work, detector.gpu_helps)

    @estimates("rank_top_images")
    def _rank(self, w, i) -> Work:
        dataset = neuron_dataset(self.config)
        images = self.dataset_images(dataset)
        if ranks_by_relevance(self.config):  # a forward and a backward pass (about 3 forwards) over the ranked images
            return Work(*costs.forward(images, self.image_side(w.model, dataset), BATCH, 3), True)
        return Work(*costs.files(max(existing_mb(i), images * costs.STORE_KB_PER_IMAGE / 1000), held=0))

    @estimates("extract_patches", "extract_patch_shard")
    def _patches(self, w, i) -> Work:
        side = self.image_side(w.model, neuron_dataset(self.config))
        patches = self.config["neurons"]["patches"]
        passes = 29 if patches["mode"] == "window" else 1  # benchmarks/patches_speed.py
        channels = math.ceil(self.neuron_channels(w) / shards_of(w))
        return Work(*costs.forward(channels * self.config["neurons"]["topn"], side, patches["batch_size"], passes),
                    True)

    @estimates("find_outlier_neurons", "synthesize_dora_signal_shard")
    def _dora(self, w, i) -> Work:
        dora = self.config["labels"]["dora"]
        neurons = math.ceil(self.layer_channels(w.model, w.layer) / shards_of(w))
        n = neurons * dora["per_neuron"] * (1 + dora["restarts"])
        side = dora["size"] or self.image_side(w.model)
        return Work(*costs.synthesis(n, dora["steps"], side, dora["batch_size"]), True)

    @estimates("label_neurons")
    def _invert(self, w, i) -> Work:
        images = self.dataset_images(self.config["labels"]["invert"]["dataset"])
        return Work(*costs.files(images * costs.STORE_KB_PER_IMAGE / 1000))

    @estimates("run_vital")
    def _vital(self, w, i) -> Work:
        from peekflow.neurons.patches import select_channels

        vital = self.config["neurons"]["vital"]
        chosen = vital["channels"]
        channels = self.neuron_channels(w) if chosen == "all" else len(select_channels(chosen, 1 << 30, w.layer))
        # the plain render and the VITAL render, whose steps also run a relevance pass (about 3x a plain step)
        side = vital["size"] or self.image_side(w.model)
        return Work(*costs.synthesis(4 * channels, vital["steps"], side, vital["batch_size"]), True)

    @estimates("build_atlas")
    def _atlas(self, w, i) -> Work:
        """Its input files and the patches.h5 of its patch folders."""
        patches = [os.path.join(p, "patches.h5") for p in i if os.path.isdir(p)]
        return Work(*costs.files(existing_mb(i) + existing_mb(patches), held=1))

    @estimates("extract_emergence_maps")
    def _emergence_maps(self, w, i) -> Work:
        side = self.image_side(w.model, self.config["emergence"]["dataset"])
        return Work(*costs.forward(self.emergence_images(w.model), side, self.config["extract"]["batch_size"]), True)

    @estimates("analyse_emergence")
    def _emergence(self, w, i) -> Work:
        block = self.config["emergence"]
        rows = self.emergence_images(w.model) * len(block["layers"])
        steps = sum(block[k] for k in ("sample_steps", "importance_steps", "regional_steps"))
        return Work(*costs.embedding(rows, steps))

    @estimates("trace_emergence_attack")
    def _trajectory(self, w, i) -> Work:
        trajectory = self.config["emergence"]["trajectory"]
        return Work(*costs.forward(trajectory["images"], self.image_side(w.model), BATCH, 3 * trajectory["steps"]),
                    True)
