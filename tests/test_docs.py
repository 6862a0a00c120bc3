"""README.md and docs/ stay true: every relative link (and its #anchor) points at a file and heading that exist, and
the README's first config runs as written (a dry run on stand-in folders and weights)."""

import re
from pathlib import Path

import yaml

from workflow import ROOT, fake_user_inputs, planned_jobs, snakemake

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(page: Path, text: str | None = None) -> list[str]:
    """The relative links of `page` (its text, or `text`) whose file or #anchor does not exist."""
    text = FENCE.sub("", page.read_text() if text is None else text)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif fragment and file.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", FENCE.sub("", file.read_text()), re.M)
            if fragment not in {anchor(h) for h in headings}:
                broken.append(target)
    return broken


def test_every_relative_link_resolves():
    assert len(PAGES) > 8
    assert {page.name: broken_links(page) for page in PAGES} == {page.name: [] for page in PAGES}


def test_the_link_check_finds_a_missing_file_and_a_missing_heading():
    page = ROOT / "docs" / "results.md"
    text = "[a](outputs.md) [b](nowhere.md) [c](real-data.md#configuration) [d](cluster.md#no-such-heading)"
    assert broken_links(page, text) == ["nowhere.md", "cluster.md#no-such-heading"]


def first_config(page: Path) -> str:
    return re.search(r"^```yaml\n(.*?)^```", page.read_text(), re.S | re.M).group(1)


def test_the_readme_config_runs_as_written(tmp_path):
    text = first_config(ROOT / "README.md")
    assert text == first_config(ROOT / "docs" / "real-data.md")  # the same example on both pages
    config = yaml.safe_load(text)
    fake_user_inputs(tmp_path, config)  # its folders with an (empty) image, a checkpoint of the right shapes
    (tmp_path / "mine.yaml").write_text(text)
    result = snakemake(tmp_path, "-n", config=tmp_path / "mine.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    assert planned_jobs(result) == {"extract_features": 3, "score_ood": 6, "gather_ood_scores": 3, "plot_ood": 3,
                                    "make_ood_table": 1, "summarise_ood": 1}
