"""A user's own config, run the way a user runs it: real Snakemake started in the project folder (where
config/config.yaml, the embedded default, lies) with `--configfile <their file elsewhere> -- <target>`. Their config
replaces the default: nothing of the default is planned, and a section they leave out is a stage skipped. Dry runs
only: nothing is written into the project folder."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

from workflow import ROOT, fake_user_inputs, planned_jobs, planned_outputs, snakemake_exe, tiny_config

MODEL = {"arch": "small_resnet", "arch_kwargs": {"widths": [8, 8, 16, 16]}, "num_classes": 3,
         "layers": ["layer3", "layer4"], "penultimate": "layer4", "checkpoint": "weights/mine.pt",
         "classes_from_folder": "data/train",
         "preprocessing": {"resize": 40, "crop": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
USER_CONFIG = {
    "device": "cpu",
    "datasets": {"mine_train": {"path": "data/train"}, "mine_val": {"path": "data/val"},
                 "mine_ood": {"path": "data/ood"}},
    "models": {"mine": MODEL},
    "target_model": "mine",
    "ood": {"id_train": "mine_train", "id_test": "mine_val", "ood_sets": ["mine_ood"],
            "methods": {"msp": {}, "knn": {"k": 5}}},
}


def run_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake started in `folder` (the user's working directory) on the project's Snakefile."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([snakemake_exe(), "-s", str(ROOT / "Snakefile"), *args], cwd=folder, capture_output=True,
                          text=True, env=env)


def user_config(tmp_path: Path, config: dict = USER_CONFIG) -> Path:
    """The user's config file outside the project, its data folders and weights beside it (absolute paths)."""
    config = yaml.safe_load(yaml.safe_dump(config))
    for spec in [*config["datasets"].values(), *config["models"].values()]:
        for key in ("path", "checkpoint", "classes_from_folder"):
            if key in spec:
                spec[key] = str(tmp_path / spec[key])
    fake_user_inputs(tmp_path, config)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_user_config_replaces_the_default(tmp_path):
    result = run_in(ROOT, "-n", "--configfile", str(user_config(tmp_path)), "--", "results/ood_table.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "extended by additional config" not in result.stdout + result.stderr
    # the user's three folders extracted, two methods x (ID test + one OOD set) scored; no generated data, no
    # training, none of the default's seven methods or its other stages
    assert planned_jobs(result) == {"extract_features": 3, "score_ood": 4, "gather_ood_scores": 2,
                                    "make_ood_table": 1}
    assert sorted(planned_outputs(result)["gather_ood_scores"]) == [
        "results/ood/mine/scores/knn.h5", "results/ood/mine/scores/msp.h5"]


def test_rule_all_of_a_user_config_plans_only_its_sections(tmp_path):
    result = run_in(ROOT, "-n", "--configfile", str(user_config(tmp_path)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert planned_jobs(result) == {"extract_features": 3, "score_ood": 4, "gather_ood_scores": 2,
                                    "plot_ood": 2, "make_ood_table": 1, "summarise_ood": 1}


def test_several_config_files_combine_in_order(tmp_path):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"ood": {"methods": {"msp": {}, "knn": {"k": 3}, "energy": {}}}}))
    result = run_in(ROOT, "-n", "--configfile", str(user_config(tmp_path)), str(overlay), "--", "results/ood_table.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    # the overlay's methods are merged into the base's; everything else comes from the base
    assert sorted(planned_outputs(result)["gather_ood_scores"]) == [
        f"results/ood/mine/scores/{m}.h5" for m in ("energy", "knn", "msp")]


def test_no_config_file_runs_the_embedded_default(tmp_path):
    # started in an empty folder (a project folder may hold finished results): the default is found by the Snakefile
    result = run_in(tmp_path, "-n", "--", "results/ood_table.csv")
    assert result.returncode == 0, result.stderr[-3000:]
    default = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    jobs = planned_jobs(result)
    assert jobs["generate_dataset"] == len(default["generate"]["sets"]) and jobs["train_model"] == 1
    assert jobs["gather_ood_scores"] == len(default["ood"]["methods"])


def test_generated_data_of_a_user_config_replace_the_defaults(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    result = run_in(ROOT, "-n", "--configfile", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "shapes_resnet" not in result.stdout and "shapes_vgg" not in result.stdout
    assert "tiny_resnet" in result.stdout
