"""docs/outputs.md is the file contract: every output that a dry run of rule `all` plans, for the embedded default and
for the ImageNet config, matches a path of the page's table, and that row names the rule that writes it; every rule
of the workflow is named there."""

import re

import pytest
import yaml

from workflow import ROOT, fake_user_inputs, planned_outputs, snakemake

PAGE = ROOT / "docs" / "outputs.md"
CONFIGS = {"default": ROOT / "config" / "config.yaml", "imagenet": ROOT / "config" / "imagenet_resnet50.yaml"}


def documented(page: str) -> list[tuple[re.Pattern, set[str], str]]:
    """(path regex, the rules the row names, the path as written) per table row whose first cell is a backticked path
    under results/ or resources/; a wildcard `{x}` stands for one or more characters other than `/`."""
    rows = []
    for line in page.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rules = set(re.findall(r"`(\w+)`", cells[1])) if len(cells) > 1 else set()
        for path in re.findall(r"`([^`]+)`", cells[0]):
            if path.startswith(("results/", "resources/")):
                parts = re.split(r"(\{\w+\})", path)
                regex = "".join("[^/]+" if re.fullmatch(r"\{\w+\}", p) else re.escape(p) for p in parts)
                rows.append((re.compile(regex), rules, path))
    return rows


def undocumented(outputs: dict[str, list[str]], rows) -> list[tuple[str, str]]:
    """(rule, path) of every planned output that no row matches with that rule named as its writer."""
    return [(rule, path) for rule, paths in outputs.items() for path in paths
            if not any(regex.fullmatch(path) and rule in rules for regex, rules, _ in rows)]


@pytest.fixture(scope="module", params=list(CONFIGS))
def dry_run_outputs(request, tmp_path_factory):
    """Rule -> the outputs its planned jobs write, in a dry run of rule `all` (the ImageNet config on stand-in
    folders and weights, as tests/test_workflow.py plans it)."""
    config = CONFIGS[request.param]
    work = tmp_path_factory.mktemp(request.param)
    if request.param == "imagenet":
        fake_user_inputs(work, yaml.safe_load(config.read_text()))
    result = snakemake(work, "-n", config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    return planned_outputs(result)


def test_every_planned_output_is_documented_with_its_rule(dry_run_outputs):
    assert "results/ood_table.csv" in dry_run_outputs["make_ood_table"]
    assert undocumented(dry_run_outputs, documented(PAGE.read_text())) == []


def test_a_page_without_a_row_or_with_another_rule_fails_the_check():
    page = PAGE.read_text()
    outputs = {"make_ood_table": ["results/ood_table.csv"], "score_ood": ["results/ood/m/scores/knn/textures.h5"]}
    assert undocumented(outputs, documented(page)) == []
    row = next(line for line in page.splitlines() if line.startswith("| `results/ood_table.csv` |"))
    assert undocumented(outputs, documented(page.replace(row + "\n", ""))) == [
        ("make_ood_table", "results/ood_table.csv")]
    assert undocumented(outputs, documented(page.replace(row, row.replace("make_ood_table", "summarise_ood")))) == [
        ("make_ood_table", "results/ood_table.csv")]
    # a wildcard is one path component: a file one folder deeper is not documented by the score files' rows
    assert undocumented({"score_ood": ["results/ood/m/scores/knn/x/textures.h5"]}, documented(page)) == [
        ("score_ood", "results/ood/m/scores/knn/x/textures.h5")]


def test_every_rule_of_the_workflow_is_named_as_a_writer():
    rules = {name for smk in (ROOT / "workflow" / "rules").glob("*.smk")
             for name in re.findall(r"^rule (\w+):", smk.read_text(), re.M)}
    named = set().union(*(written_by for _, written_by, _ in documented(PAGE.read_text())))
    assert len(rules) > 20
    assert rules - named == set() and named - rules == set()
