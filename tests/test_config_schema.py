"""The config schema's stage blocks come from the settings classes; settings_problems checks a whole config."""

import copy
from pathlib import Path

import pytest
import yaml

from peekflow.cli import stage_parser
from peekflow.neurons.dora import DoraSettings
from peekflow.prototypes.deepdream import DreamSettings
from peekflow.workflow.config_checks import fill_defaults
from peekflow.workflow.config_schema import SCHEMA, generate, settings_of, settings_problems, workflow_schema
from peekflow.workflow.yaml_dump import dump

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["config/config.yaml", "config/imagenet_resnet50.yaml", "tests/data/tiny_config.yaml"]


def load(path):
    return yaml.safe_load((ROOT / path).read_text())


def test_committed_schema_is_the_generated_one():
    text = SCHEMA.read_text()
    assert text == dump(generate(yaml.safe_load(text))), "run: python -m peekflow.workflow.config_schema"


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_configs_have_no_problems_and_validate_fills_nested_defaults(path):
    from snakemake.utils import validate

    config = load(path)
    assert settings_problems(config) == []
    by_snakemake = copy.deepcopy(config)
    validate(by_snakemake, str(SCHEMA))
    fill_defaults(config, workflow_schema())  # as the Snakefile does
    assert config == by_snakemake  # the defaults that Snakemake's validate fills from the schema file
    assert settings_problems(config) == []
    inversion = config["prototypes"]["methods"]["deepinversion"]
    assert inversion["betas"] == [0.5, 0.9] and inversion["fold_bn"] is True and inversion["schedule"] == "cosine"


def test_every_kind_of_problem_is_reported_at_once_with_its_path():
    config = load("tests/data/tiny_config.yaml")
    bad = copy.deepcopy(config)
    bad["prototypes"]["methods"]["deepdream"]["jiter"] = 2
    bad["prototypes"]["methods"]["deepinversion"]["schedule"] = "cosin"
    bad["prototypes"]["methods"]["caricature"] = {"per_class": 0}
    bad["labels"]["dora"]["steps"] = "ten"
    bad["labels"]["invert"].update(min_fraction=0.6, max_fraction=0.5)
    bad["extract"]["layers"] = ["layer4"]
    bad["emergence"]["trajectory"]["eps"] = -1
    bad["models"]["tiny_vgg"]["train"]["settings"]["optimizer"] = "adam"
    bad["ood"]["methods"].update(knnn={}, odin={"temperature": 1000.0, "epsilon": 2.0},
                                 knn={"k": [1, "five"]}, energy={"temprature": 1})
    problems = settings_problems(bad)
    assert problems == [
        "extract.layers: unknown key (the workflow sets it)",
        "prototypes.methods.deepdream.jiter: unknown key (did you mean jitter?)",
        "prototypes.methods.deepinversion.schedule: 'cosin' is not one of ['constant', 'cosine']",
        "prototypes.methods.caricature.per_class: must be >= 1, got 0",
        "prototypes.methods.caricature.layer: missing (required)",
        "models.tiny_vgg.train.settings.optimizer: 'adam' is not one of ['sgd', 'adamw']",
        "labels.dora.steps: expected an integer, got 'ten'",
        "labels.invert: need min_fraction < max_fraction, got 0.6, 0.5",
        "emergence.trajectory.eps: must be >= 0, got -1",
        "ood.methods.energy.temprature: unknown key (did you mean temperature?)",
        "ood.methods.odin: odin: epsilon must be a number in [0, 1), got 2.0",
        "ood.methods.knn.k: expected a list of integer values, got 'five' in it",
        "ood.methods.knnn: unknown OOD method (did you mean knn?)",
    ]


def test_a_swept_k_is_checked_value_by_value():
    config = load("tests/data/tiny_config.yaml")
    config["ood"]["methods"]["knn"] = {"k": [1, 0]}
    assert settings_problems(config) == ["ood.methods.knn: knn: k must be a positive integer, got 0"]


@pytest.mark.parametrize("stage,cls", [("dream", DreamSettings), ("dora", DoraSettings)])
def test_help_lists_every_key_with_its_help_as_the_schema_does(stage, cls):
    import dataclasses

    text = stage_parser(stage, f"peekflow {stage}")[0].format_help()
    schema = yaml.safe_load(SCHEMA.read_text())["properties"]
    block = {"dream": schema["prototypes"]["properties"]["methods"]["properties"]["deepdream"],
             "dora": schema["labels"]["properties"]["dora"]}[stage]["properties"]
    for f in dataclasses.fields(cls):
        assert f.metadata["help"] in text and block[f.name]["description"] == f.metadata["help"]
    assert '  steps: int = 48' in text if stage == "dora" else '  steps: int = 200' in text
    assert "--device" in text


def test_settings_reference_page_is_generated_and_current():
    from peekflow.workflow.config_schema import DOCS, docs

    text = DOCS.read_text()
    assert text == docs(generate(yaml.safe_load(SCHEMA.read_text()))) + "\n", (
        "run: python -m peekflow.workflow.config_schema")
    assert "## `prototypes.methods.deepdream`" in text and "## `ood.methods.knn`" in text
    assert "| `jitter` |" in text and "adam \\| adamw" in text


def test_every_key_of_a_data_set_and_a_model_is_documented():
    from peekflow.workflow.config_schema import DOCS, HAND_WRITTEN, node_at

    schema, text = workflow_schema(), DOCS.read_text()
    for path in HAND_WRITTEN:
        node = node_at(schema, path)
        assert node.get("description") and f"## `{path}`" in text, path
        for key, prop in node["properties"].items():
            assert prop.get("description"), f"{path}.{key} has no description"
            assert f"| `{key}` |" in text.split(f"## `{path}`")[1].split("\n## ")[0], f"{path}.{key}"


def test_settings_of_a_block_are_its_classes_keys_less_the_workflows():
    from test_config_checks import validated
    from workflow import tiny_config

    config = validated(tiny_config())
    invert = settings_of(config, "labels.invert")
    assert "dataset" not in invert and invert["beam_size"] == 3 and "max_length" in invert
    assert "dataset" not in settings_of(config, "prototypes.methods.caricature")
    assert settings_of(config, "prototypes.methods.deepdream") == config["prototypes"]["methods"]["deepdream"]
    extract = settings_of(config, "extract", layers=["layer4"])
    assert extract["layers"] == ["layer4"] and not {"threads", "shards"} & set(extract)
    emergence = settings_of(config, "emergence")
    assert not {"dataset", "layers", "trajectory"} & set(emergence) and emergence["grid"] == 2
    assert settings_of(config, "models.tiny_resnet.train.settings")["epochs"] == 2  # a block under `*`
