"""Replicas (training seeds, several checkpoints) and the summaries over them: names, expansion, mean and std equal
to numpy's over the replicas' own rows, and a real Snakemake run of the tiny config with two training seeds."""

import json

import numpy as np
import pandas as pd
import pytest

from peekflow.workflow import replicas
from peekflow.summary import curve_summary, markdown, ood_summary, report_summary
from workflow import planned_jobs, snakemake, tiny_config, write_config


def test_seeds_and_checkpoint_lists_become_replicas():
    config = tiny_config()
    config["models"]["tiny_resnet"]["train"]["seeds"] = [3, 1]
    config["models"]["ckpt"] = {**config["models"]["tiny_vgg"], "checkpoint": ["a.pt", "b.pt"]}
    config["models"]["ckpt"].pop("train")
    config["target_models"] = ["tiny_resnet", "ckpt"]
    config.pop("target_model")
    replicas.expand(config)
    assert config["target_models"] == ["tiny_resnet@s3", "tiny_resnet@s1", "ckpt@r1", "ckpt@r2"]
    assert sorted(config["models"]) == ["ckpt@r1", "ckpt@r2", "tiny_resnet@s1", "tiny_resnet@s3", "tiny_vgg"]
    s3 = config["models"]["tiny_resnet@s3"]["train"]
    assert s3["settings"]["seed"] == 3 and "seeds" not in s3 and s3["settings"]["epochs"] == 2
    assert config["models"]["ckpt@r2"]["checkpoint"] == "b.pt"
    assert replicas.base("tiny_resnet@s3") == "tiny_resnet" and replicas.base("tiny_vgg") == "tiny_vgg"


def test_a_single_target_model_stays_as_it_is():
    config = replicas.expand(tiny_config())
    assert config["target_models"] == ["tiny_resnet"] and "tiny_resnet" in config["models"]


def test_ood_summary_is_mean_and_std_over_the_replicas():
    rng = np.random.default_rng(0)
    rows = [{"model": f"m@s{s}", "method": meth, "ood_dataset": d, **{k: rng.uniform(0, 100) for k in
             ["auroc", "fpr95", "fpr95_openood", "aupr_in", "aupr_out"]}, "n_id": 10, "n_ood": 10}
            for s in (1, 2, 3) for meth in ("msp", "knn") for d in ("a", "average")]
    rows.append({**rows[0], "model": "other"})  # another model: its own group of one
    table = pd.DataFrame(rows)
    summary = ood_summary(table).set_index(["model", "method", "ood_dataset"])
    mine = table[(table.model.str.startswith("m@")) & (table.method == "knn") & (table.ood_dataset == "a")]
    got = summary.loc[("m", "knn", "a")]
    assert got.n == 3 and got.replicas == "m@s1 m@s2 m@s3"
    assert got.auroc_mean == pytest.approx(mine.auroc.mean()) and got.auroc_std == pytest.approx(mine.auroc.std(ddof=1))
    assert summary.loc[("other", "msp", "a")].n == 1 and np.isnan(summary.loc[("other", "msp", "a")].auroc_std)
    text = markdown(summary.reset_index(), ["auroc"])
    assert f"{mine.auroc.mean():.2f} ± {mine.auroc.std(ddof=1):.2f}" in text


def test_report_summary_reads_each_replicas_json(tmp_path):
    reports = {}
    for seed, acc in [(1, 0.5), (2, 0.7)]:
        path = tmp_path / f"{seed}.json"
        path.write_text(json.dumps({"target_accuracy": 1.0, "probe_accuracy": acc}))
        reports[f"m@s{seed}/deepdream"] = path
    row = report_summary(reports, ["target_accuracy", "probe_accuracy"]).iloc[0]
    assert (row.model, row.what, row.n) == ("m", "deepdream", 2)
    assert row.probe_accuracy_mean == pytest.approx(0.6) and row.probe_accuracy_std == pytest.approx(np.std([.5, .7], ddof=1))
    with pytest.raises(ValueError, match="has no \\['hungarian_accuracy'\\]"):
        report_summary(reports, ["hungarian_accuracy"])


def test_curve_summary_summarises_each_point_of_the_replicas_curves(tmp_path):
    reports = {}
    for seed, curve in [(1, [1.0, 0.5, 0.2]), (2, [1.0, 0.7, 0.4])]:
        path = tmp_path / f"{seed}.json"
        path.write_text(json.dumps({"depths": [0, 1, 2], "accuracy_by_depth": curve, "chance": [1.0, 0.4, 0.1]}))
        reports[f"m@s{seed}/probing:p"] = path
    summary = curve_summary(reports, "depths", "depth", ["accuracy_by_depth", "chance", "hungarian"])
    assert summary["depth"].tolist() == [0, 1, 2] and (summary.n == 2).all() and set(summary.what) == {"probing:p"}
    np.testing.assert_allclose(summary.accuracy_by_depth_mean, [1.0, 0.6, 0.3])
    np.testing.assert_allclose(summary.accuracy_by_depth_std, [0.0, np.std([.5, .7], ddof=1), np.std([.2, .4], ddof=1)])
    assert summary.hungarian_mean.isna().all()  # a curve no report holds
    assert summary.replicas.tolist() == ["m@s1 m@s2"] * 3
    with pytest.raises(ValueError, match="has no 'steps'"):
        curve_summary(reports, "steps", "step", ["chance"])


def test_two_training_seeds_run_to_their_summaries(tmp_path):
    """The tiny config with two seeds of the target (OOD, prototypes, probing): every replica gets its own outputs,
    the tables hold both, the summaries count n = 2."""
    config = tiny_config()
    config["models"]["tiny_resnet"]["train"]["seeds"] = [1, 2]
    for section in ("labels", "neurons", "emergence"):
        config.pop(section)
    config["prototypes"]["methods"].pop("caricature")
    config["ood"]["methods"] = {"msp": {}, "knn": {"k": 5}, "knn_deepinversion": {"k": 1}}
    config["ood"]["ood_sets"] = ["textures"]
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results/ood_table.csv")
    assert sorted(set(table.model)) == ["tiny_resnet@s1", "tiny_resnet@s2"] and len(table) == 2 * 3 * 2
    summary = pd.read_csv(tmp_path / "results/ood_summary.csv")
    assert set(summary.model) == {"tiny_resnet"} and (summary.n == 2).all() and len(summary) == 3 * 2
    semantic = [("semantics", {"probing:tiny_vgg"}), ("semantic_depths", {"probing:tiny_vgg"})] \
        if "semantics" in config else []  # probing judged against WordNet (where it is installed)
    for stage, what in [("prototypes", {"deepdream", "deepinversion"}), ("probing", {"tiny_vgg"}), *semantic]:
        s = pd.read_csv(tmp_path / f"results/{stage}_summary.csv")
        assert set(s.what) == what and (s.n == 2).all(), s
    weights = [(tmp_path / f"results/models/tiny_resnet@s{seed}/model.pt").read_bytes() for seed in (1, 2)]
    assert weights[0] != weights[1]  # each replica trained with its own seed
    assert planned_jobs(snakemake(tmp_path, "-n")) == {}  # nothing to do afterwards
