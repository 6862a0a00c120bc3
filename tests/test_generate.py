"""The embedded data set generator: layout, determinism, attributes true of the pixels, errors, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from peekflow import cli
from peekflow.data import colours
from peekflow.data.generate import GenerateSettings, generate_dataset
from peekflow.data.scenes import POS_X, POS_Y, shape_image
from peekflow.data.shapes import DEFAULT_ID_SHAPES, DEFAULT_NEAR_OOD_SHAPES, SHAPE_NAMES, unit_shape

SIZE = 32


def make(tmp_path, kind="shapes", name="set", workers=1, **kw):
    kw.setdefault("seed", 3)
    kw.setdefault("image_size", SIZE)
    kw.setdefault("splits", {"train": 3, "val": 2})
    if kind == "shapes":
        kw.setdefault("classes", ["circle", "star", "ring"])
    out = tmp_path / name
    return out, generate_dataset(out, kind, GenerateSettings(**kw), workers=workers)


def files(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


@pytest.mark.parametrize("kind", ["shapes", "textures", "noise"])
def test_layout_and_attributes_list_exactly_the_files(tmp_path, kind):
    out, table = make(tmp_path, kind, splits={"train": 7, "val": 5})
    on_disk = files(out)
    csv = pd.read_csv(out / "attributes.csv")
    assert sorted(csv["path"]) == sorted(on_disk) == sorted(table["path"])
    for path, split, cls in zip(csv["path"], csv["split"], csv["class"]):
        assert path.split("/")[:2] == [split, cls]
        with Image.open(out / path) as img:
            assert img.mode == "RGB" and img.size == (SIZE, SIZE)
    per_split = csv.groupby("split").size().to_dict()
    if kind == "shapes":  # counts are per class
        assert per_split == {"train": 21, "val": 15}
        assert set(csv.columns) >= {"shape", "colour", "texture", "size", "pos_x", "pos_y", "rotation",
                                    "background", "background_colour"}
        assert (csv["shape"] == csv["class"]).all()
    else:  # counts are totals; the class folder is the pattern / noise type
        assert per_split == {"train": 7, "val": 5}
        assert (csv["pattern" if kind == "textures" else "noise"] == csv["class"]).all()
        assert not set(csv["class"]) & set(SHAPE_NAMES)


def test_same_settings_byte_identical_other_seed_differs(tmp_path):
    a, _ = make(tmp_path, name="a")
    b, _ = make(tmp_path, name="b", workers=2)  # worker count must not matter
    c, _ = make(tmp_path, name="c", seed=4)
    fa, fb, fc = files(a), files(b), files(c)
    assert fa == fb
    assert (a / "attributes.csv").read_bytes() == (b / "attributes.csv").read_bytes()
    assert fa.keys() == fc.keys() and all(fa[k] != fc[k] for k in fa)


def test_splits_differ_and_images_do_not_depend_on_other_classes(tmp_path):
    out, _ = make(tmp_path, splits={"train": 2, "val": 2})
    f = files(out)
    assert f["train/star/00000.png"] != f["val/star/00000.png"]
    solo, _ = make(tmp_path, name="solo", classes=["star"], splits={"train": 2, "val": 2})
    assert files(solo)["train/star/00001.png"] == f["train/star/00001.png"]


def test_regeneration_removes_stale_files(tmp_path):
    out, _ = make(tmp_path, splits={"train": 3, "old": 2})
    make(tmp_path, splits={"train": 1})
    assert sorted(files(out)) == sorted(pd.read_csv(out / "attributes.csv")["path"])
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        make(tmp_path)
    assert (out / "notes.txt").exists()


def test_position_and_colour_attributes_are_true_of_pixels():
    """On plain backgrounds with solid fill: the mass centre of the pixels that differ from the background lies in
    the named thirds, and those pixels' mean colour is nearest the named colour."""
    checked = 0
    for i in range(240):
        name = DEFAULT_ID_SHAPES[i % len(DEFAULT_ID_SHAPES)]
        img, attrs = shape_image(name, 64, np.random.default_rng([7, i]))
        if attrs["background"] != "plain" or attrs["texture"] != "solid":
            continue
        px = img.reshape(-1, 3).astype(float)
        corner = img[0, 0].astype(float)
        assert colours.nearest_name(corner) == attrs["background_colour"]
        diff = np.linalg.norm(px - corner, axis=1)  # antialiased edge pixels count in proportion
        weight = diff.reshape(64, 64)
        ys, xs = np.mgrid[0:64, 0:64] + 0.5
        cx, cy = (weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()
        assert abs(cx - (POS_X.index(attrs["pos_x"]) + 0.5) * 64 / 3) <= 64 / 6 + 0.5, attrs
        assert abs(cy - (POS_Y.index(attrs["pos_y"]) + 0.5) * 64 / 3) <= 64 / 6 + 0.5, attrs
        core = diff > 0.9 * diff.max()
        assert colours.nearest_name(px[core].mean(0)) == attrs["colour"], attrs
        checked += 1
    assert checked >= 8


def test_unit_shapes_are_centred_and_fit_the_unit_circle():
    for name in SHAPE_NAMES:
        pts = np.vstack([p for p, add in unit_shape(name) if add])
        assert np.isclose(np.linalg.norm(pts, axis=1).max(), 1.0), name


def test_default_shape_lists():
    assert len(DEFAULT_ID_SHAPES) == 10 and len(DEFAULT_NEAR_OOD_SHAPES) >= 5
    assert not set(DEFAULT_ID_SHAPES) & set(DEFAULT_NEAR_OOD_SHAPES)
    assert set(DEFAULT_ID_SHAPES) | set(DEFAULT_NEAR_OOD_SHAPES) <= set(SHAPE_NAMES)
    assert "diamond" not in SHAPE_NAMES  # a rotated square


@pytest.mark.parametrize(
    ("kind", "settings", "message"),
    [
        ("shapes", {"classes": ["circle", "blob"]}, r"blob.*valid names: circle"),
        ("shapes", {"classes": None}, "classes"),
        ("textures", {"classes": ["circle"]}, "only for kind=shapes"),
        ("shapes", {"splits": {"train": 0}}, "train"),
        ("shapes", {"splits": {"../x": 1}}, "split name"),
        ("fractals", {}, "unknown kind"),
    ],
)
def test_bad_settings_fail_naming_the_fault(tmp_path, kind, settings, message):
    kw = {"seed": 0, "image_size": SIZE, "splits": {"train": 1}, "classes": ["circle"] if kind == "shapes" else None}
    kw.update(settings)
    with pytest.raises(ValueError, match=message):
        generate_dataset(tmp_path / "x", kind, GenerateSettings(**kw))
    assert not (tmp_path / "x").exists()


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "datasets" / "shapes"
    settings = {"seed": 1, "image_size": SIZE, "classes": ["heart", "arrow"], "splits": {"test": 2}}
    argv = ["generate", "--kind", "shapes", "--out", str(out), "--settings", json.dumps(settings)]
    assert cli.main(argv) == 0
    assert sorted(pd.read_csv(out / "attributes.csv")["path"]) == sorted(files(out))
    assert len(files(out)) == 4
    settings["colour"] = "red"
    assert cli.main(argv[:-1] + [json.dumps(settings)]) == 1
    assert "colour" in capsys.readouterr().err
