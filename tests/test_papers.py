"""Published tables as data and a run's table set beside them (peekflow.ood.papers, `peekflow compare`)."""

import numpy as np
import pandas as pd
import pytest
import yaml

from peekflow.ood import papers
from peekflow.ood.base import available, build
from peekflow.ood.papers import COLUMNS, CompareSettings, compare, known_papers, load_paper, write_comparison

PAPER = {
    "title": "A planted table", "source": "tests", "columns": ["fpr95", "auroc"],
    "groups": {"average": ["inaturalist", "sun"], "near": ["inaturalist", "places"]},
    "rows": [
        {"method": "msp", "sets": {"inaturalist": [50.0, 88.0], "average": [60.0, 80.0], "near": [None, 85.0]}},
        {"method": "knn", "settings": {"k": 1}, "sets": {"inaturalist": [70.0, 81.3]}, "note": "bank from the test file"},
        {"method": "knn", "settings": {"k": 50}, "sets": {"inaturalist": [83.0, 68.0]}},
        {"method": "energy", "settings": {"temperature": 1.0}, "sets": {"sun": [58.0, 86.0]}},
        {"method": "odin", "sets": {"textures": [40.0, 90.0]}},
    ],
}
# the run: msp, knn at k 1 and 5 (swept), energy at T=2; OOD sets inat (the paper's inaturalist) and sun, group near
RUNS = {"msp": ("msp", {}), "knn_k1": ("knn", {"k": 1, "samples_per_class": None}),
        "knn_k5": ("knn", {"k": 5, "samples_per_class": None}), "energy": ("energy", {"temperature": 2.0})}
SETS = ["inat", "sun", "average_near", "average"]


def run_table(seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for run in RUNS:
        for name in SETS:
            auroc, fpr95 = rng.uniform(60, 95), rng.uniform(20, 80)
            rows.append({"model": "m", "method": run, "ood_dataset": name, "auroc": auroc, "fpr95": fpr95,
                         "auroc_lo": auroc - rng.uniform(0, 8), "auroc_hi": auroc + rng.uniform(0, 8),
                         "fpr95_lo": fpr95 - rng.uniform(0, 8), "fpr95_hi": fpr95 + rng.uniform(0, 8)})
    return pd.DataFrame(rows)


@pytest.fixture
def planted(tmp_path, monkeypatch):
    (tmp_path / "planted.yaml").write_text(yaml.safe_dump(PAPER))
    monkeypatch.setattr(papers, "PUBLISHED", tmp_path)
    return "planted"


def test_each_published_value_is_set_beside_the_matching_runs(planted):
    table = run_table()
    out = compare(table, RUNS, [planted], sets={"inaturalist": "inat"}, groups={"near": ["inat", "sun"]})
    assert list(out.columns) == COLUMNS
    compared = out[out.status == "compared"]
    by_row = table.set_index(["method", "ood_dataset"])
    # msp: inaturalist (2 metrics), average (2), near (AUROC only: FPR95 not published); knn k=1 on inaturalist (2)
    assert sorted(zip(compared.method, compared.ood_dataset, compared.metric)) == sorted(
        [("msp", "inat", "fpr95"), ("msp", "inat", "auroc"), ("msp", "average", "fpr95"), ("msp", "average", "auroc"),
         ("msp", "average_near", "auroc"), ("knn_k1", "inat", "fpr95"), ("knn_k1", "inat", "auroc")])
    for r in compared.itertuples():  # brute force: the table's value, run - published, inside [lo, hi]
        row = by_row.loc[(r.method, r.ood_dataset)]
        assert r.run == row[r.metric] and r.difference == pytest.approx(row[r.metric] - r.published)
        lo, hi = row[f"{r.metric}_lo"], row[f"{r.metric}_hi"]
        assert (r.run_lo, r.run_hi) == (lo, hi) and r.inside_ci == (lo <= r.published <= hi)
    knn = compared[compared.method == "knn_k1"]
    assert set(knn.published_settings) == {"k=1"} and set(knn.note) == {"bank from the test file"}
    # the paper's near averages inaturalist and places, the run's near inat and sun: said, still compared
    near = compared[compared.ood_dataset == "average_near"].note.iloc[0]
    assert "average_near averages ['inat', 'sun'], the paper's near ['inat', 'places']" in near


def test_what_only_one_side_has_is_listed_not_dropped(planted):
    out = compare(run_table(), RUNS, [planted], sets={"inaturalist": "inat"})
    missing = out[out.status == "not in the run"]
    # knn k=50 (the run sweeps 1 and 5), energy at T=1 (the run's T is 2), odin (no run)
    assert sorted(zip(missing.published_method, missing.published_settings, missing.metric)) == sorted(
        [("knn", "k=50", "fpr95"), ("knn", "k=50", "auroc"), ("energy", "temperature=1.0", "fpr95"),
         ("energy", "temperature=1.0", "auroc"), ("odin", "", "fpr95"), ("odin", "", "auroc")])
    assert set(missing[missing.published_method == "odin"].note) == {"no run of odin"}
    assert set(missing[missing.published_method == "knn"].note) == {"no run of knn with k=50"}
    lacking = out[out.status == "not in the paper"]
    # knn_k5: knn with other settings; energy: the paper's energy has T=1; the sets the paper lacks for msp, knn k=1
    assert sorted(zip(lacking.method, lacking.ood_dataset.fillna(""))) == sorted(
        [("knn_k5", ""), ("energy", ""), ("msp", "sun"), ("knn_k1", "sun"),
         ("knn_k1", "average_near"), ("knn_k1", "average")])
    assert set(lacking[lacking.method == "knn_k5"].note) == {"planted publishes knn only with k=1 / k=50"}


def test_a_published_set_the_run_lacks_is_listed(planted):
    out = compare(run_table(), RUNS, [planted])  # no set map: the run has no 'inaturalist'
    msp = out[(out.published_method == "msp") & (out.published_set == "inaturalist")]
    assert set(msp.status) == {"not in the run"} and set(msp.note) == {"the run has no row 'inaturalist'"}


def test_unknown_paper_names_the_known_ones():
    with pytest.raises(ValueError, match=r"no published table 'nope'; known: \['openood_v15_imagenet_resnet50', "
                                         r"'peek_imagenet_resnet50'\]"):
        load_paper("nope")
    with pytest.raises(ValueError, match=r"papers: no published table \['nope'\]; known: \["):
        CompareSettings(papers=["nope"])


def test_shipped_tables_name_registered_methods_and_valid_settings():
    assert known_papers() == ["openood_v15_imagenet_resnet50", "peek_imagenet_resnet50"]
    for name in known_papers():
        paper = load_paper(name)
        assert paper["title"] and paper["source"] and paper["config"]
        for row in paper["rows"]:
            assert row["method"] in available(), (name, row["method"])
            settings = build(row["method"], row.get("settings")).settings()
            assert all(settings[k] == v for k, v in (row.get("settings") or {}).items()), row
            for values in row["sets"].values():
                assert all(v is None or 0 <= v <= 100 for v in values), row


def test_written_files_hold_every_row(planted, tmp_path):
    out = compare(run_table(), RUNS, [planted], sets={"inaturalist": "inat"})
    write_comparison(out, tmp_path / "c.csv", tmp_path / "c.md")
    back = pd.read_csv(tmp_path / "c.csv")
    assert len(back) == len(out) and list(back.columns) == COLUMNS
    md = (tmp_path / "c.md").read_text()
    assert "## A planted table" in md and "**Not in the run**" in md and "**Not in the paper**" in md
    assert "- knn (k=50) on inat fpr95 83.00: no run of knn with k=50" in md
    assert "| m       | knn_k1   | inat          | auroc    |       81.30 |" in md
