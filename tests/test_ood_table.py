"""The OOD table's CI and settings columns, the paper-style markdown table, and `peekflow plot-ood` (from score files
written in the layout of peekflow.ood.scoring)."""

import json
import re

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from peekflow import cli
from peekflow.ood.metrics import bootstrap_metrics, percentile_ci
from peekflow.ood.table import COLUMNS, build_table, paper_table, write_table

OOD = ["textures", "noise"]


def write_scores(path, method, settings, fit_store="", seed=0, n=(40, 30, 20)):
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as h5:
        for name, size, mean in zip(["val", *OOD], n, [1.0, 0.0, -0.5]):
            h5.create_dataset(name, data=rng.normal(mean, 1, size))
        h5.attrs.update(method=method, settings=json.dumps(settings), layer="", fit_store=fit_store,
                        higher_is_id=True, complete=True)
    return str(path)


@pytest.fixture
def score_files(tmp_path):
    return {
        "msp": write_scores(tmp_path / "msp.h5", "msp", {}, seed=1),
        "odin": write_scores(tmp_path / "odin.h5", "odin", {"temperature": 1000.0, "epsilon": 0.0014}, seed=2),
        "knn": write_scores(tmp_path / "knn.h5", "knn", {"k": 50, "batch_size": 4096},
                            "results/features/m/shapes_train.h5", seed=3),
        "knn_1pc": write_scores(tmp_path / "knn_1pc.h5", "knn", {"k": 10, "samples_per_class": 13},
                                "results/features/m/imagenet_train.h5", seed=4),
        "knn_deepinversion": write_scores(tmp_path / "kdi.h5", "knn_deepinversion", {"k": 5},
                                          "results/features/m/deepinversion.h5", seed=5),
    }


def test_ci_and_settings_columns(score_files):
    df = build_table(score_files, "val", OOD, n_bootstrap=200, seed=4)
    assert list(df.columns) == COLUMNS and len(df) == 5 * 3
    rows = df.set_index(["method", "ood_dataset"])
    with h5py.File(score_files["odin"]) as h5:
        s_id, per_set = h5["val"][:], {name: h5[name][:] for name in OOD}
    for stream, name in enumerate(OOD):  # stream = the OOD set's position
        boot = bootstrap_metrics(s_id, per_set[name], 200, seed=4, stream=stream)
        for key in ("auroc", "fpr95"):
            assert (rows.loc[("odin", name), f"{key}_lo"], rows.loc[("odin", name), f"{key}_hi"]) == pytest.approx(
                percentile_ci(boot[key]))
    # every interval holds its point estimate, the average row's too
    for key in ("auroc", "fpr95"):
        assert (df[f"{key}_lo"] <= df[key]).all() and (df[key] <= df[f"{key}_hi"]).all(), key
    settings = df.groupby("method", sort=False)[["k", "bank", "temperature", "epsilon"]].first()
    assert settings.loc["odin"].tolist()[2:] == [1000.0, 0.0014] and settings.loc["odin"].isna().tolist()[:2] == [True] * 2
    assert settings.loc["msp"].isna().all()
    assert settings.loc["knn", "k"] == 50 and settings.loc["knn", "bank"] == "shapes_train"
    assert settings.loc["knn_1pc", "bank"] == "imagenet_train (13/class)"
    assert settings.loc["knn_deepinversion"].tolist()[:2] == [5, "deepinversion"]
    assert df.k.dtype == "Int64"


def test_bootstrap_off_leaves_ci_columns_empty(score_files, tmp_path):
    df = build_table({"msp": score_files["msp"]}, "val", OOD, n_bootstrap=0)
    assert df[["auroc_lo", "auroc_hi", "fpr95_lo", "fpr95_hi"]].isna().all().all()
    write_table(df, tmp_path / "t.csv")
    assert (tmp_path / "t.csv").read_text().splitlines()[1].endswith(",,,,,,,,")  # 4 CIs + 4 settings empty


def markdown_table(text: str) -> list[list[str]]:
    """The GitHub-flavoured-markdown pipe table in `text` as rows of cells; asserts what makes it render: a header
    row, a delimiter row of dashes (optionally colon-aligned) with the same number of cells, body rows alike."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert len(lines) >= 3
    rows = []
    for line in lines:
        assert line.endswith("|") and "\\|" not in line
        rows.append([cell.strip() for cell in line[1:-1].split("|")])
    assert all(len(row) == len(rows[0]) for row in rows), [len(row) for row in rows]
    assert all(re.fullmatch(r":?-+:?", cell) for cell in rows[1]), rows[1]
    assert text.index(lines[0]) > 0 and "\n\n" + lines[0] in text  # a blank line before the table
    return [rows[0], *rows[2:]]


def test_markdown_is_paper_style_and_renders(score_files, tmp_path):
    df = build_table(score_files, "val", OOD, n_bootstrap=50)
    write_table(df, tmp_path / "t.csv", tmp_path / "t.md")
    header, *body = markdown_table((tmp_path / "t.md").read_text())
    assert header == ["method", "settings", "textures FPR95↓", "textures AUROC↑", "noise FPR95↓", "noise AUROC↑",
                      "average FPR95↓", "average AUROC↑"]
    assert [row[0] for row in body] == list(score_files)
    assert body[1][1] == "T=1000, eps=0.0014" and body[2][1] == "k=50, bank=shapes_train" and body[0][1] == ""
    csv = pd.read_csv(tmp_path / "t.csv").set_index(["method", "ood_dataset"])
    for row in body:
        for i, name in enumerate([*OOD, "average"]):
            assert float(row[2 + 2 * i]) == pytest.approx(csv.loc[(row[0], name), "fpr95"], abs=0.006)
            assert float(row[3 + 2 * i]) == pytest.approx(csv.loc[(row[0], name), "auroc"], abs=0.006)
    assert paper_table(df).shape == (5, 8)


def test_table_cli_bootstrap_flags(score_files, tmp_path):
    out = tmp_path / "t.csv"
    args = ["table", f"--scores=msp={score_files['msp']}", "--id", "val", "--ood", *OOD, "--out-csv", str(out)]
    assert cli.main([*args, "--n-bootstrap", "100", "--seed", "3"]) == 0
    first = pd.read_csv(out)
    assert cli.main([*args, "--n-bootstrap", "100", "--seed", "3"]) == 0
    pd.testing.assert_frame_equal(first, pd.read_csv(out))
    assert cli.main([*args, "--n-bootstrap", "100", "--seed", "4"]) == 0
    assert not first.auroc_lo.equals(pd.read_csv(out).auroc_lo)
    assert cli.main([*args, "--n-bootstrap", "-1"]) == 1


def test_plot_ood_cli(score_files, tmp_path, capsys):
    roc, hist = tmp_path / "fig" / "knn_roc.png", tmp_path / "fig" / "knn_hist.png"
    args = ["plot-ood", "--scores", score_files["knn"], "--id", "val", "--ood", *OOD,
            "--out-roc", str(roc), "--out-hist", str(hist)]
    assert cli.main([*args, "--bins", "20", "--dpi", "50"]) == 0
    for path in (roc, hist):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 100 and img.getextrema() != ((255, 255),) * 3
    small = Image.open(roc).size
    assert cli.main([*args, "--dpi", "100"]) == 0
    assert Image.open(roc).size[0] == pytest.approx(2 * small[0], abs=2)  # dpi reaches the figure
    assert cli.main([*args[:6], "svhn", *args[8:]]) == 1
    assert "has no data set(s) ['svhn']" in capsys.readouterr().err
    assert cli.main([*args, "--bins", "0"]) == 1 and "bins must be >= 1" in capsys.readouterr().err


def test_group_averages_sit_beside_the_overall_one(score_files, tmp_path):
    df = build_table(score_files, "val", OOD, n_bootstrap=20, groups={"near": ["textures"], "far": ["noise"]})
    msp = df[df.method == "msp"].set_index("ood_dataset")
    assert list(msp.index) == [*OOD, "average_near", "average_far", "average"]
    assert msp.auroc["average_near"] == msp.auroc["textures"] and msp.n_ood["average_far"] == 20
    assert msp.auroc_lo["average_near"] == msp.auroc_lo["textures"]  # the mean of one set's resamples is its own
    assert np.isclose(msp.auroc["average"], (msp.auroc["average_near"] + msp.auroc["average_far"]) / 2)
    write_table(df, tmp_path / "t.csv", tmp_path / "t.md")
    header = (tmp_path / "t.md").read_text().split("\n")[3]
    assert header.index("average_near AUROC") < header.index("average_far AUROC") < header.index(" average AUROC")
    with pytest.raises(ValueError, match="group 'near' must name some of the OOD data sets"):
        build_table(score_files, "val", OOD, n_bootstrap=0, groups={"near": ["svhn"]})


def test_swept_settings_show_in_the_setting_column(tmp_path):
    files = {"react_percentile85": write_scores(tmp_path / "r.h5", "react", {"percentile": 85.0},
                                                "results/features/m/shapes_train.h5")}
    row = build_table(files, "val", OOD, n_bootstrap=0).iloc[0]
    assert (row.setting, row.bank) == ("percentile=85", "shapes_train")
