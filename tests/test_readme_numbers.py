"""The numbers of docs/results.md come from a run's summary files (peekflow.workflow.readme_numbers): every number the
generator writes is one of the summaries' values at the shown precision, only the marked sections change, and the
page it writes by default holds every section."""

import re
from pathlib import Path

import pandas as pd

from peekflow.workflow.readme_numbers import SECTIONS, main, ood_section, ood_sets_section, rewrite, sections

ROOT = Path(__file__).resolve().parents[1]


def summary_rows(rows) -> pd.DataFrame:
    return pd.DataFrame([{"model": "m", "method": "knn", "ood_dataset": name, "auroc_mean": v, "auroc_std": 1.0,
                          "fpr95_mean": 100 - v, "fpr95_std": 2.0, "n": 3} for name, v in rows])


def test_every_number_written_is_in_the_summary_files(finished_run):
    results = finished_run / "results"
    written = sections(results)
    semantic = ["semantics", "semantic_depths"] if (results / "semantics_summary.csv").exists() else []
    assert set(written) == {"ood", "ood_sets", "prototypes", "probing", *semantic}
    summaries = ["ood", "prototypes", "probing", *semantic]
    values = pd.concat([pd.read_csv(results / f"{s}_summary.csv") for s in summaries])
    numeric = values.select_dtypes("number").to_numpy().ravel()
    numeric = numeric[~pd.isna(numeric)]
    for name, text in written.items():
        body = "\n".join(text.splitlines()[2:])  # below the header row and rule
        for token in re.findall(r"-?\d+\.\d+", body):  # a negative one with its sign (a Mantel r)
            digits = len(token.split(".")[1])
            assert any(f"{v:.{digits}f}" == token for v in numeric), (name, token)


def test_rewrite_changes_only_the_marked_sections():
    text = "intro 1.0\n<!-- numbers:ood:start -->\nold 2.0\n<!-- numbers:ood:end -->\nlater 3.0\n"
    new = rewrite(text, {"ood": "| new |", "probing": "unused"}, note="from X")
    assert new == "intro 1.0\n<!-- numbers:ood:start -->\n| new |\nfrom X\n<!-- numbers:ood:end -->\nlater 3.0\n"


def test_group_averages_are_columns_of_the_averages_not_ood_sets():
    rows = [("a", 90.0), ("b", 70.0), ("c", 50.0), ("average_near", 90.0), ("average_far", 60.0), ("average", 70.0)]
    summary = summary_rows(rows)
    averages, per_set = ood_section(summary), ood_sets_section(summary)
    cells = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    assert cells(averages.splitlines()[0])[2:] == ["average FPR95 ↓", "average AUROC ↑", "near AUROC ↑", "far AUROC ↑",
                                                   "n"]
    assert cells(averages.splitlines()[2])[3:6] == ["70.0 ± 1.0", "90.0 ± 1.0", "60.0 ± 1.0"]
    assert cells(per_set.splitlines()[0])[2:] == ["a AUROC", "b AUROC", "c AUROC", "n"]


def test_docs_results_holds_every_section_and_the_readme_none():
    page, readme = (ROOT / "docs" / "results.md").read_text(), (ROOT / "README.md").read_text()
    for name in SECTIONS:
        for end in ("start", "end"):
            marker = f"<!-- numbers:{name}:{end} -->"
            assert page.count(marker) == 1 and marker not in readme, marker


def test_the_generator_rewrites_docs_results_by_default(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    summary_rows([("a", 80.0), ("average", 80.0)]).to_csv(tmp_path / "results" / "ood_summary.csv", index=False)
    (tmp_path / "docs").mkdir()
    page = "# Results\n<!-- numbers:ood:start -->\nold\n<!-- numbers:ood:end -->\n"
    (tmp_path / "docs" / "results.md").write_text(page)
    (tmp_path / "README.md").write_text(page)
    monkeypatch.chdir(tmp_path)
    assert main(["--command", "`a run`"]) == 0
    written = (tmp_path / "docs" / "results.md").read_text()
    assert "old" not in written and "80.0 ± 1.0" in written and "from `a run`." in written
    assert (tmp_path / "README.md").read_text() == page


def test_semantic_sections_read_the_mantel_tests_and_the_depths_from_the_deepest_shared_hypernym():
    from peekflow.workflow.readme_numbers import semantic_depths_section, semantics_section

    mantel = pd.DataFrame([{"model": "m", "what": w, "n": 3, "mantel_r_mean": r, "mantel_r_std": 0.1,
                            "mantel_p_mean": 0.01, "mantel_p_std": 0.005} for w, r in [("probing:p", 0.5),
                                                                                        ("dora:fc", -0.25)]])
    lines = semantics_section(mantel).splitlines()
    assert "PEEK probing: similarity vs Wu-Palmer (p)" in lines[2] and "0.500 ± 0.100" in lines[2]
    assert "DORA, output units: EA vs WordNet distance (fc)" in lines[3] and "-0.250 ± 0.100" in lines[3]
    depths = pd.DataFrame([{"model": "m", "what": "probing:p", "depth": d, "n": 3, "accuracy_by_depth_mean": a,
                            "accuracy_by_depth_std": 0.0, "hungarian_accuracy_by_depth_mean": a,
                            "hungarian_accuracy_by_depth_std": 0.0, "chance_accuracy_by_depth_mean": c,
                            "chance_accuracy_by_depth_std": 0.0}
                           for d, a, c in [(0, 1, 1), (1, 1, 1), (2, 1, 1), (3, 0.9, 0.5), (4, 0.8, 0.1)]])
    rows = semantic_depths_section(depths).splitlines()[2:]
    assert [int(r.split("|")[2]) for r in rows] == [2, 3, 4]  # from depth 2, the deepest one every class shares
