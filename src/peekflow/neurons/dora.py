"""DORA outlier neurons (Bykov et al., "DORA: Exploring Outlier Representations in Deep Neural Networks", TMLR 2023).

1. s-AMS: per neuron (channel) c of the layer, `per_neuron` synthetic activation-maximisation signals: images that
   maximise the spatial mean of channel c, rendered by the synthesis engine; one batch renders many neurons (image i
   maximises its own channel c_i: objectives.channel with one channel per image).
2. Representation r_c in R^C: the layer's spatially averaged response, over all C channels, to neuron c's s-AMS;
   with several s-AMS per neuron, the mean of their responses.
3. Extreme-activation distance D_ij = sqrt((1 - cos(r_i, r_j)) / 2), in [0, 1]. A zero representation (an s-AMS that
   switches the whole layer off) has cosine 0 to every other one (D = 0.707).
4. Outlier score: scikit-learn's LocalOutlierFactor on D (metric="precomputed"): score = -negative_outlier_factor_
   (about 1 inside a cluster, larger when a neuron's neighbourhood is sparser than its neighbours'); the flag is LOF's
   own decision (contamination "auto": score > 1.5, or the given share); rank 1 = the highest score.
5. 2-D map: classical MDS of D (top eigenvectors of the double-centred -D^2 / 2): deterministic, no seed needed.

A neuron its s-AMS did not raise above its response to the starting image (a ReLU channel that is off there gets no
gradient, so its s-AMS stays the starting noise) is reported with activated=False and left out of 3-5: otherwise such
neurons form a tight cluster of near-identical noise responses whose neighbours get LOF scores of 50 and more. A larger
init_std (noisier starting images) leaves fewer of them: on the embedded default's layer4, 0.3 rather than 0.01
leaves 4 of 128 neurons instead of 55.

Sharding (labels.shards.dora): the s-AMS are rendered in batches of batch_size images (whole neurons); batch j
depends only on the settings and j -- its starting images are seeded from (seed, i), its transforms from seed + j,
and its restarts render its own unraised neurons together -- so shards of whole batches (dora_signals with a
peekflow.shards.BatchPlan; `peekflow merge-dora` joins their signal files) give a one-job run's output bit for bit on
the CPU.

Unlike the original, the optimiser settings (lr, steps, optimizer, schedule) reach the render loop, and the channel
is taken from the channel axis of the layer's [B,C,H,W] output (the spatial mean per channel, then channel c_i).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from peekflow.data.folder import Preprocessing
from peekflow.device import resolve_device
from peekflow.models.layers import layer_channels, pool, record_layers
from peekflow.prototypes.batching import per_image_param, render_in_batches, repeat_each, resolve_size
from peekflow.settings import redefault, setting
from peekflow.shards import BatchPlan, joined
from peekflow.synthesis.objectives import channel
from peekflow.synthesis.settings import RenderSettings, scaled_jitter
from peekflow.synthesis.regularisers import tv_l2

log = logging.getLogger("peekflow")


@dataclass
class DoraSettings(RenderSettings):
    steps: int = redefault(RenderSettings, "steps", 48)
    param: str = redefault(RenderSettings, "param", "fourier")
    init_std: float = redefault(RenderSettings, "init_std", 0.3)
    jitter: int | None = scaled_jitter(2, 64)  # 2 px at 64 px (the embedded default), 7 px at 224 px
    batch_size: int = redefault(RenderSettings, "batch_size", 128)
    neurons: str | list[int] = setting("all", '"all" or a list of channel indices', choices=["all"])
    per_neuron: int = setting(1, "s-AMS per neuron", minimum=1)
    tv: float = setting(0.0, "weight of the L2 total variation on the s-AMS (0: none)", minimum=0)
    restarts: int = setting(2, "neurons whose s-AMS did not raise them are rendered again from new starting images "
                               "(seed + 1000 r, init_std x 2^r), up to this many times (0: never)", minimum=0)
    n_neighbors: int = setting(10, "LOF neighbours (at most neurons - 1)", minimum=1)
    contamination: str | float = setting("auto", 'LOF\'s flag: "auto" or the expected share of outliers',
                                         choices=["auto"], exclusive_minimum=0, maximum=0.5)


@dataclass
class DoraSignals:
    """What the network stage makes for some neurons (a shard's, or all): the rest of DORA needs no model."""

    neurons: np.ndarray  # [n] channel indices
    images: np.ndarray  # [n * per_neuron, 3, H, W] s-AMS in [0,1], neuron-major
    representations: np.ndarray  # [n, C]
    start_activation: np.ndarray  # [n]
    activated: np.ndarray  # [n] bool


@dataclass
class DoraResult:
    neurons: np.ndarray  # [n] channel indices
    images: np.ndarray  # [n * per_neuron, 3, H, W] s-AMS in [0,1], neuron-major
    representations: np.ndarray  # [n, C] mean layer response to each neuron's s-AMS
    activated: np.ndarray  # [n] bool: the s-AMS raised its neuron above its response at the start
    start_activation: np.ndarray  # [n] the neuron's mean response to its starting images
    distances: np.ndarray  # [m, m] extreme-activation distance between the m activated neurons
    scores: np.ndarray  # [n] LOF score (higher = more outlying); NaN where not activated
    outlier: np.ndarray  # [n] bool
    rank: np.ndarray  # [n] 1 = most outlying; 0 where not activated
    coords: np.ndarray  # [n, 2] classical MDS of the distances; NaN where not activated


def resolve_neurons(selection, channels: int, layer: str) -> list[int]:
    if selection == "all":
        return list(range(channels))
    if isinstance(selection, str) or not isinstance(selection, list) or not selection:
        raise ValueError(f"neurons must be \"all\" or a non-empty list of channel indices, got {selection!r}")
    bad = [c for c in selection if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < channels]
    if bad:
        raise ValueError(f"neurons {bad} are not channels of layer {layer!r}, which has {channels}")
    return list(selection)


def encode(model: nn.Module, layer: str, images: np.ndarray, preprocessing: Preprocessing, device,
           batch_size: int = 256) -> np.ndarray:
    """Spatial-mean response of every channel of `layer` to images [M,3,H,W] in [0,1] -> [M, C]."""
    mean = torch.tensor(preprocessing.mean, device=device).reshape(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, device=device).reshape(1, 3, 1, 1)
    out = []
    with torch.no_grad(), record_layers(model.eval(), [layer]) as acts:
        for start in range(0, len(images), batch_size):
            x = torch.as_tensor(images[start:start + batch_size], device=device)
            model((x - mean) / std)
            out.append(pool(acts[layer])[0].float().cpu())
    return torch.cat(out).numpy().astype(np.float64)


def ea_distance(representations: np.ndarray) -> np.ndarray:
    """D_ij = sqrt((1 - cos(r_i, r_j)) / 2); zero rows have cosine 0 to the others."""
    r = np.asarray(representations, dtype=np.float64)
    norms = np.linalg.norm(r, axis=1, keepdims=True)
    unit = np.divide(r, norms, out=np.zeros_like(r), where=norms > 0)
    cos = np.clip(unit @ unit.T, -1.0, 1.0)
    d = np.sqrt((1.0 - cos) / 2.0)
    np.fill_diagonal(d, 0.0)
    return d


def lof_outliers(distances: np.ndarray, n_neighbors: int, contamination="auto") -> tuple[np.ndarray, np.ndarray]:
    """(LOF score [n], outlier flag [n]) on a precomputed distance matrix."""
    n = len(distances)
    if n < 3:
        raise ValueError(f"DORA needs at least 3 neurons for outlier scores, got {n}")
    from sklearn.neighbors import LocalOutlierFactor  # here: scikit-learn takes a second to import, and the workflow's
    # config checks import this module for its settings in every Snakemake run

    lof = LocalOutlierFactor(n_neighbors=min(n_neighbors, n - 1), metric="precomputed", contamination=contamination)
    flags = lof.fit_predict(distances) == -1
    return -lof.negative_outlier_factor_, flags


def classical_mds(distances: np.ndarray, dims: int = 2) -> np.ndarray:
    n = len(distances)
    centre = np.eye(n) - 1.0 / n
    gram = -0.5 * centre @ (distances ** 2) @ centre
    values, vectors = np.linalg.eigh(gram)
    top = np.argsort(values)[::-1][:dims]
    coords = vectors[:, top] * np.sqrt(np.clip(values[top], 0, None))
    # fixed signs (same input, same picture): eigh may return either sign of an eigenvector, and the coordinates are
    # centred (each column sums to ~0), so each axis is turned to make its largest-magnitude entry positive
    largest = coords[np.abs(coords).argmax(0), np.arange(coords.shape[1])]
    return coords * np.where(largest < 0, -1, 1)


def make_sams(model: nn.Module, layer: str, neurons: list[int], preprocessing: Preprocessing, s: DoraSettings,
              size: int, device, plan: BatchPlan | None = None) -> np.ndarray:
    """s-AMS of `neurons`, neuron-major: [len(neurons) * per_neuron, 3, size, size] in [0,1] (with a `plan`: the
    rows of its shard)."""

    def objective_for(batch):
        goal = channel(layer, batch)
        return goal + s.tv * tv_l2() if s.tv else goal

    images, _, _ = render_in_batches(repeat_each(neurons, s.per_neuron), objective_for, model, preprocessing, s,
                                     size=size, device=device, what=f"dora s-AMS {layer}", plan=plan)
    return images


def starting_images(count: int, s: DoraSettings, size: int, first: int = 0) -> np.ndarray:
    """The images make_sams starts from, rows first:first + count (render_in_batches seeds image i from (seed, i))."""
    with torch.no_grad():
        param = per_image_param(s.param, list(range(first, first + count)), size, s.seed, s.init_std, "cpu")
        return param.image_fn().clamp(0, 1).numpy().astype(np.float32)


def _sams_and_responses(model, layer, neurons, preprocessing, s: DoraSettings, size: int, device, batch=(0, 1)):
    """s-AMS of the neurons of render batch `batch` (j, of B; (0, 1): all `neurons`) and, per neuron, the layer's
    mean response to them [n, C], its own response to its starting images [n] and whether the s-AMS raised it above
    that (activated [n])."""
    plan = BatchPlan(shard=batch)
    first, stop = plan.rows(len(neurons) * s.per_neuron, s.batch_size, f"dora s-AMS {layer}")
    mine = neurons[first // s.per_neuron:stop // s.per_neuron]
    n, rows = len(mine), np.arange(len(mine))
    images = make_sams(model, layer, neurons, preprocessing, s, size, device, plan)
    reps = encode(model, layer, images, preprocessing, device).reshape(n, s.per_neuron, -1).mean(1)
    start = encode(model, layer, starting_images(len(images), s, size, first), preprocessing, device)
    start = start.reshape(n, s.per_neuron, -1).mean(1)[rows, mine]
    return images, reps, start, reps[rows, mine] > start


def batch_signals(model, layer, neurons, batch, preprocessing, s: DoraSettings, size: int, device) -> dict:
    """Render batch `batch` = (j, B) of the s-AMS of `neurons`, with restarts for its neurons the s-AMS did not
    raise: {images, representations, start_activation, activated} of the batch's neurons. It depends on the
    settings and j only (restarts render the batch's unraised neurons together), never on how batches are shared
    out among jobs."""
    images, reps, start, activated = _sams_and_responses(model, layer, neurons, preprocessing, s, size, device, batch)
    first = batch[0] * s.batch_size // s.per_neuron
    mine = neurons[first:first + len(activated)]
    for r in range(1, s.restarts + 1):  # a unit off for its starting images gets no gradient: start elsewhere
        again = np.flatnonzero(~activated)
        if not len(again):
            break
        retry = dataclasses.replace(s, seed=s.seed + 1000 * r, init_std=s.init_std * 2**r)
        out = _sams_and_responses(model, layer, [mine[i] for i in again], preprocessing, retry, size, device)
        won = again[out[3]]
        log.info("DORA: restart %d (seed %d, init_std %g) raised %d of %d neurons of %r left in batch %d", r,
                 retry.seed, retry.init_std, len(won), len(again), layer, batch[0] + 1)
        rows = (won[:, None] * s.per_neuron + np.arange(s.per_neuron)).ravel()
        images[rows] = out[0].reshape(-1, s.per_neuron, *images.shape[1:])[out[3]].reshape(-1, *images.shape[1:])
        reps[won], start[won], activated[won] = out[1][out[3]], out[2][out[3]], True
    return {"images": images, "representations": reps, "start_activation": start, "activated": activated}


def check_dora_batches(s: DoraSettings, neurons: int) -> int:
    """The render batches of `neurons` s-AMS runs; a batch must hold whole neurons when there are several."""
    batches = -(-neurons * s.per_neuron // s.batch_size)
    if batches > 1 and s.batch_size % s.per_neuron:
        raise ValueError(f"DORA: batch_size {s.batch_size} must be a multiple of per_neuron {s.per_neuron} when "
                         f"the {neurons} neurons take more than one batch")
    return batches


def dora_neurons(model: nn.Module, layer: str, preprocessing: Preprocessing, s: DoraSettings, device) -> list[int]:
    """The channels of `layer` that DORA analyses (s.neurons)."""
    device = resolve_device(device)
    size = resolve_size(s.size, preprocessing)
    return resolve_neurons(s.neurons, layer_channels(model.to(device).eval(), layer, size, device), layer)


def dora_signals(model: nn.Module, layer: str, preprocessing: Preprocessing, s: DoraSettings, device="auto",
                 plan: BatchPlan | None = None) -> DoraSignals:
    """The s-AMS, representations and start responses of the layer's neurons (with a `plan`: of its shard's render
    batches, finished ones read back from its partial folder)."""
    device = resolve_device(device)
    model = model.to(device).eval()
    size = resolve_size(s.size, preprocessing)
    neurons = dora_neurons(model, layer, preprocessing, s, device)
    batches = check_dora_batches(s, len(neurons))
    plan = plan or BatchPlan()
    first, stop = plan.rows(len(neurons) * s.per_neuron, s.batch_size, f"dora {layer}")
    parts = plan.batches(
        len(neurons) * s.per_neuron, s.batch_size, f"dora {layer}",
        lambda j, _: (batch_signals(model, layer, neurons, (j, batches), preprocessing, s, size, device), {}),
        describe=lambda a: f" ({len(a['activated'])} neurons, {int(a['activated'].sum())} raised)")
    mine = np.asarray(neurons[first // s.per_neuron:stop // s.per_neuron], dtype=np.int64)
    return DoraSignals(neurons=mine, **joined(parts))


def dora_outliers(signals: DoraSignals, layer: str, s: DoraSettings) -> DoraResult:
    """Distances, LOF and map of the neurons whose s-AMS raised them (module doc); the others are reported with
    activated=False and left out."""
    neurons, reps, activated = signals.neurons, signals.representations, signals.activated
    n = len(neurons)
    if not activated.all():
        log.warning("DORA: the s-AMS of %d of %d neurons of %r did not raise them above their starting response "
                    "(%d steps, lr %g, %d restarts): they are left out; raise steps, lr or restarts to analyse them",
                    n - int(activated.sum()), n, layer, s.steps, s.lr, s.restarts)
    if activated.sum() < 3:
        raise ValueError(f"DORA: the s-AMS raised only {int(activated.sum())} of {n} neurons of {layer!r} above "
                         f"their starting response (at least 3 needed): raise steps, lr or init_std")
    distances = ea_distance(reps[activated])
    scores, outlier = np.full(n, np.nan), np.zeros(n, dtype=bool)
    scores[activated], outlier[activated] = lof_outliers(distances, s.n_neighbors, s.contamination)
    rank = np.zeros(n, dtype=np.int64)
    rank[np.flatnonzero(activated)[np.argsort(-scores[activated], kind="stable")]] = np.arange(1, activated.sum() + 1)
    coords = np.full((n, 2), np.nan)
    coords[activated] = classical_mds(distances)
    return DoraResult(np.asarray(neurons), signals.images, reps, activated, signals.start_activation, distances,
                      scores, outlier, rank, coords)


def run_dora(model: nn.Module, layer: str, preprocessing: Preprocessing, s: DoraSettings,
             device="auto") -> DoraResult:
    """s-AMS, representations, distances, LOF and map of every selected neuron of `layer` (module doc)."""
    return dora_outliers(dora_signals(model, layer, preprocessing, s, device), layer, s)


def dora_table(r: DoraResult) -> pd.DataFrame:
    """One row per neuron, most outlying first (then the neurons left out): neuron, lof, outlier, rank, activated,
    the map coordinates x, y, and the neuron's mean response to its s-AMS and to their starting images."""
    own = r.representations[np.arange(len(r.neurons)), r.neurons]
    table = pd.DataFrame({"neuron": r.neurons, "lof": r.scores, "outlier": r.outlier, "rank": r.rank,
                          "activated": r.activated, "x": r.coords[:, 0], "y": r.coords[:, 1],
                          "self_activation": own, "start_activation": r.start_activation})
    table["order"] = np.where(r.activated, r.rank, len(r.neurons) + 1)
    return table.sort_values(["order", "neuron"]).drop(columns="order").reset_index(drop=True)
