"""config/ood_methods.yaml (every registered method, near/far groups) on top of the embedded default, and a dry run
of the tiny config with new methods, a sweep, a data-free bank variant and groups."""

import copy
from pathlib import Path

import yaml
from snakemake.utils import update_config

from peekflow.workflow.config_checks import ood_runs, reference_problems
from peekflow.ood.base import available
from peekflow.workflow.preflight import ood_fit_size_problems
from peekflow.workflow.replicas import expand
from test_config_checks import validated
from workflow import planned_jobs, planned_outputs, snakemake, tiny_config, write_config

ROOT = Path(__file__).resolve().parents[1]


def overlaid() -> dict:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    update_config(config, yaml.safe_load((ROOT / "config" / "ood_methods.yaml").read_text()))
    return config


def test_overlay_lists_every_method_and_checks_clean():
    config = overlaid()
    assert sorted(config["ood"]["methods"]) == available()
    assert reference_problems(validated(copy.deepcopy(config))) == []
    # no method whose fit the 40-row prototype banks would leave undetermined (ViM / Residual at their default dim)
    assert ood_fit_size_problems(expand(validated(config)), config["target_model"]) == []
    assert config["ood"]["groups"] == {"near": ["novel_shapes"], "far": ["textures", "noise"]}


def test_new_methods_sweeps_banks_and_groups_plan_their_jobs(tmp_path):
    config = tiny_config()
    config["ood"]["methods"] = {"maxlogit": {}, "react": {"percentile": [85, 90]}, "vim_deepinversion": {"dim": 2}}
    config["ood"]["groups"] = {"near": ["novel_shapes"], "far": ["textures", "noise"]}
    assert list(ood_runs(config)) == ["maxlogit", "react_percentile85", "react_percentile90", "vim_deepinversion"]
    result = snakemake(tmp_path, "-n", "results/ood_table.csv", config=write_config(tmp_path, config))
    assert result.returncode == 0, result.stderr[-2000:]
    jobs, outputs = planned_jobs(result), planned_outputs(result)
    evaluated = 1 + len(config["ood"]["ood_sets"])
    assert jobs["score_ood"] == 4 * evaluated and jobs["gather_ood_scores"] == 4
    assert jobs["extract_prototype_features"] == 1  # vim_deepinversion fits on the prototypes' features
    assert "results/ood/tiny_resnet/scores/react_percentile85/shapes_val.h5" in outputs["score_ood"]
    config["ood"]["groups"] = {"near": ["shapes_train"]}
    assert any("ood.groups.near: names 'shapes_train', which is not one of ood.ood_sets" in p
               for p in reference_problems(validated(config)))


def test_methods_page_is_generated_from_the_registry():
    from peekflow.ood import catalogue

    assert catalogue.main(["--check"]) == 0, "run python -m peekflow.ood.catalogue"
