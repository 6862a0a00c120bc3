"""README numbers come from a run's summary files (peekflow.readme_numbers): every number the generator writes is
one of the summaries' values at the shown precision, and only the marked sections change."""

import re

import pandas as pd

from peekflow.readme_numbers import rewrite, sections


def test_every_number_written_is_in_the_summary_files(finished_run):
    results = finished_run / "results"
    written = sections(results)
    assert set(written) == {"ood", "ood_sets", "prototypes", "probing"}
    values = pd.concat([pd.read_csv(results / f"{s}_summary.csv") for s in ("ood", "prototypes", "probing")])
    numeric = values.select_dtypes("number").to_numpy().ravel()
    numeric = numeric[~pd.isna(numeric)]
    for name, text in written.items():
        body = "\n".join(text.splitlines()[2:])  # below the header row and rule
        for token in re.findall(r"\d+\.\d+", body):
            digits = len(token.split(".")[1])
            assert any(f"{v:.{digits}f}" == token for v in numeric), (name, token)


def test_rewrite_changes_only_the_marked_sections():
    text = "intro 1.0\n<!-- numbers:ood:start -->\nold 2.0\n<!-- numbers:ood:end -->\nlater 3.0\n"
    new = rewrite(text, {"ood": "| new |", "probing": "unused"}, note="from X")
    assert new == "intro 1.0\n<!-- numbers:ood:start -->\n| new |\nfrom X\n<!-- numbers:ood:end -->\nlater 3.0\n"
