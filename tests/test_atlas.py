"""The neuron atlas (rule build_atlas, peekflow.neurons.atlas): a real tiny Snakemake run (top-N by relevance, VITAL)
builds it for one layer;
its pages' images exist, a neuron page shows that neuron's INVERT formula and LOF score, text is escaped, and (slow)
headless Chromium loads every image of the index and of a neuron page."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from workflow import snakemake, tiny_config, write_config

MODEL, LAYER = "tiny_resnet", "layer4"


@pytest.fixture(scope="module")
def atlas_run(tmp_path_factory):
    """A tiny config cut to what the atlas of one layer needs, run up to results/atlas/<model>."""
    config = tiny_config()
    for key in ("prototypes", "probing", "emergence", "semantics"):
        config.pop(key, None)
    config["ood"]["methods"] = {"msp": {}}
    config["neurons"]["layers"] = [LAYER]
    config["neurons"]["ranking"] = {"rank_by": "relevance", "batch_size": 16}  # Relevance Maximisation, run for real
    work = tmp_path_factory.mktemp("atlas")
    write_config(work, config)
    result = snakemake(work, "--cores", "2", f"results/atlas/{MODEL}")
    assert result.returncode == 0, result.stderr[-3000:]
    return work


def img_sources(path) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', path.read_text())


def test_atlas_pages_images_labels_and_filters(atlas_run):
    atlas = atlas_run / "results" / "atlas" / MODEL
    layer = atlas / LAYER
    assert f'href="{LAYER}/index.html"' in (atlas / "index.html").read_text()
    index = (layer / "index.html").read_text()
    assert 'id="concept"' in index and 'type="checkbox"' in index and "applyFilter" in index
    thumbs = img_sources(layer / "index.html")
    assert len(thumbs) == 2 and index.count('loading="lazy"') == 2  # neurons.patches.channels "0:2"
    invert = pd.read_csv(atlas_run / "results" / "neurons" / MODEL / LAYER / "invert.csv").set_index("neuron")
    dora = pd.read_csv(atlas_run / "results" / "neurons" / MODEL / LAYER / "dora.csv").set_index("neuron")
    page = layer / "neuron_1.html"
    sources = img_sources(page)
    # top-N 4 shared images (boxes drawn over them), one strip each of the k=2 patches, plain | VITAL, DORA's s-AMS;
    # the thumbnails of neighbours in DORA's map that have pages
    own = [s for s in sources if not s.startswith(("../images/", "img/thumb_"))]
    assert own == ["img/vital_1.png", "img/sams_1.png"]
    assert sum(s.startswith("../images/") for s in sources) == 4
    crops = re.findall(r'class="crop" style="[^"]*background-image:url\(([^)]+)\)', page.read_text())
    assert len(crops) == 2 and all(c.startswith("../images/") and (layer / c).is_file() for c in crops)  # k = 2
    assert all(s == "img/thumb_0.png" for s in sources if s.startswith("img/thumb_"))
    for src in thumbs + sources:
        assert not src.startswith("data:") and (layer / src).is_file(), src
    text = page.read_text()
    assert html.escape(invert.loc[1, "formula"]) in text
    assert f"{dora.loc[1, 'lof']:.4g}" in text and 'href="img/dora.png"' in text and (layer / "img/dora.png").is_file()
    assert f'data-concept="{html.escape(invert.loc[1, "formula"].lower())}"' in index
    assert "Visualisations: plain channel visualisation and VITAL" in text
    from peekflow.neurons.vital_files import read_vital

    vital, _ = read_vital(atlas_run / "results" / "neurons" / MODEL / LAYER / "vital.h5")
    row = vital["channels"].tolist().index(1)
    assert f"activation {vital['activation/vital'][row]:.4g}" in text
    assert f"probe similarity {vital['similarity/vital'][row]:.3f}" in text
    assert not list(atlas_run.glob("results/atlas/.*tmp*"))  # the temporary folder was renamed
    from peekflow.neurons.topn import read_topn

    topn = read_topn(atlas_run / "results" / "neurons" / MODEL / LAYER / "topn.h5")
    assert topn.attrs["rank_by"] == "relevance" and topn.indices.shape[1] == 4


def test_partial_run_shows_what_exists_and_names_what_is_missing(atlas_run, tmp_path, monkeypatch):
    from peekflow.neurons.atlas import LayerInputs, build_atlas

    monkeypatch.chdir(atlas_run)
    stem = atlas_run / "results" / "neurons" / MODEL / LAYER
    inputs = {LAYER: LayerInputs(topn=str(stem / "topn.h5"), patches=str(stem / "patches"),
                                 dora=str(tmp_path / "not_yet" / "dora.csv"), invert=str(stem / "invert.csv")),
              "layer3": LayerInputs(topn=str(tmp_path / "layer3_topn.h5"), patches=str(tmp_path / "layer3_patches"))}
    assert build_atlas(tmp_path / "atlas", MODEL, inputs) == {LAYER: 2, "layer3": 0}
    page = (tmp_path / "atlas" / LAYER / "neuron_1.html").read_text()
    assert "Not built yet, so not shown: dora" in page and "not_yet/dora.csv" in page
    assert "INVERT formula" in page and "DORA LOF score" not in page
    layer3 = (tmp_path / "atlas" / "layer3" / "index.html").read_text()
    assert "no neurons yet" in layer3 and "layer3_topn.h5" in layer3 and "layer3_patches" in layer3


def test_text_is_escaped(atlas_run, tmp_path, monkeypatch):
    from peekflow.neurons.atlas import LayerInputs, build_atlas

    monkeypatch.chdir(atlas_run)  # the top-N file's image paths are relative to the working directory
    stem = atlas_run / "results" / "neurons" / MODEL / LAYER
    invert = pd.read_csv(stem / "invert.csv")
    invert.loc[invert["neuron"] == 0, "formula"] = '<script>alert("x")</script> & shape=circle'
    invert.to_csv(tmp_path / "invert.csv", index=False)
    inputs = LayerInputs(topn=str(stem / "topn.h5"), patches=str(stem / "patches"), invert=str(tmp_path / "invert.csv"))
    build_atlas(tmp_path / "atlas", "m<1>", {LAYER: inputs})
    page = (tmp_path / "atlas" / LAYER / "neuron_0.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; shape" in page
    assert "m&lt;1&gt;" in (tmp_path / "atlas" / "index.html").read_text()


# --- a synthetic atlas: two layers over 12 shared greyscale images (no workflow run), labelled where it matters
PREP = json.dumps({"resize": None, "crop": None, "mean": [0.5] * 3, "std": [0.25] * 3, "interpolation": "bilinear"})


def synthetic_layer(work, images, layer: str, channels: int, rows, token: bool = False):
    """topn.h5 and a patch folder of `channels` channels whose top-4 images are `rows` [C,4] of `images`."""
    import numpy as np

    from peekflow.neurons.patch_files import write_patch_h5
    from peekflow.neurons.patches import Patches
    from peekflow.neurons.topn import TopN, write_topn

    paths = np.asarray(images, dtype=object)[rows]
    acts = np.sort(np.random.default_rng(1).random(rows.shape, np.float32))[:, ::-1] + np.arange(channels)[:, None]
    write_topn(work / f"{layer}_topn.h5", TopN(rows, acts.astype(np.float32), paths,
                                               {"layer": layer, "n": 4, "rows": len(images), "preprocessing": PREP}))
    boxes = np.array([4, 8, 8, 12]) if token else np.array([0, 0, 16, 16])  # token (1, 2) of a 4 px grid
    side = 20 if token else 16
    pixels = np.repeat(np.random.default_rng(2).integers(0, 255, (channels, 2, 1, side, side), dtype=np.uint8), 3, 2)
    info = {"mode": "map", "token": {"cell": [4, 4], "context": [20, 20], "input": [32, 32]}} if token else {}
    (work / f"{layer}_patches").mkdir()
    write_patch_h5(work / f"{layer}_patches" / "patches.h5", Patches(
        channels=np.arange(channels), rows=rows[:, :2], paths=paths[:, :2], activations=acts[:, :2],
        boxes=np.broadcast_to(boxes, (channels, 2, 4)).copy(), pixels=pixels), {"layer": layer, "info": info})
    return str(work / f"{layer}_topn.h5"), str(work / f"{layer}_patches")


@pytest.fixture(scope="module")
def synthetic_atlas(tmp_path_factory):
    import numpy as np
    from PIL import Image

    from peekflow.neurons.atlas import LayerInputs, build_atlas

    work = tmp_path_factory.mktemp("synthetic_atlas")
    rng = np.random.default_rng(0)
    images = []
    for i in range(12):
        images.append(str(work / f"img_{i}.png"))
        Image.fromarray(np.repeat(rng.integers(0, 256, (32, 32, 1), dtype=np.uint8), 3, 2)).save(images[-1])
    conv_rows = np.stack([rng.permutation(12)[:4] for _ in range(8)])
    token_rows = np.stack([rng.permutation(12)[:4] for _ in range(6)])
    conv = synthetic_layer(work, images, "conv", 8, conv_rows)
    tokens = synthetic_layer(work, images, "blocks.1", 6, token_rows, token=True)
    dora = pd.DataFrame({"neuron": range(8), "lof": [1.0, 1.1, 0.9, 3.5, 1.2, 2.5, 1.0, 0.95],
                         "outlier": [False, False, False, True, False, True, False, False],
                         "rank": [5, 3, 8, 1, 2, 4, 6, 7], "activated": True, "x": rng.random(8), "y": rng.random(8)})
    dora.to_csv(work / "dora.csv", index=False)
    invert = pd.DataFrame({"neuron": range(8), "formula": ["a", "b OR c", None, "square", "a AND d", "circle", "e",
                                                           "<f>"], "auc": [0.7, 0.9, 0.5, 0.95, 0.6, 0.8, 0.75, 0.65],
                           "p_value": [0.01, 1e-5, 0.5, 1e-6, 0.2, 1e-4, 0.002, 0.03]})
    invert.to_csv(work / "invert.csv", index=False)
    layers = {"conv": LayerInputs(*conv, dora=str(work / "dora.csv"), invert=str(work / "invert.csv")),
              "blocks.1": LayerInputs(*tokens), "later": LayerInputs(str(work / "no_topn.h5"), str(work / "none"))}
    counts = build_atlas(work / "atlas", "vit<s>", layers)
    return work, counts, images, (conv_rows, token_rows), dora, invert


def test_home_page_lists_the_layers_with_their_counts_and_highlights(synthetic_atlas):
    work, counts, *_ = synthetic_atlas
    assert counts == {"conv": 8, "blocks.1": 6, "later": 0}
    home = (work / "atlas" / "index.html").read_text()
    assert "Neuron atlas of vit&lt;s&gt;" in home and "3 layer(s), 14 neurons" in home
    rows = re.findall(r"<tr>(<td>.*?)</tr>", home)
    assert [re.search(r'href="([^"]+)"', r).group(1) for r in rows] == [
        "conv/index.html", "blocks.1/index.html", "later/index.html"]
    cells = [re.findall(r"<td>(.*?)</td>", r) for r in rows]
    # neurons (of the layer), top-N, k, INVERT labelled, p < 0.001, DORA outliers, VITAL, token layer
    assert cells[0][1:8] == ["8 of 8", "4", "2", "7", "3", "2", "not run"]
    assert cells[1][1:8] == ["6 of 6", "4", "2", "not run", "not run", "not run", "not run"]
    assert "token layer (4 px cells)" in cells[1][8]
    assert cells[2][1] == "no neurons yet" and "no_topn.h5" in home
    outlying = home[home.index("Most outlying"):home.index("Best INVERT")]
    assert re.findall(r'href="conv/neuron_(\d+).html"', outlying) == ["3", "5"]  # by DORA rank
    best = home[home.index("Best INVERT"):]
    assert re.findall(r'href="conv/neuron_(\d+).html"', best)[:3] == ["3", "1", "5"]  # by AUC
    for src in img_sources(work / "atlas" / "index.html"):
        assert (work / "atlas" / src).is_file()


def test_top_images_and_thumbnails_are_written_once_and_shared(synthetic_atlas):
    work, _, images, (conv_rows, token_rows), *_ = synthetic_atlas
    atlas = work / "atlas"
    distinct = set(conv_rows.ravel()) | set(token_rows.ravel())
    assert len(list((atlas / "images").glob("*.png"))) == len(distinct)  # across both layers, once each
    for layer, n in (("conv", 8), ("blocks.1", 6)):
        # per neuron one image file, its thumbnail; its top-N images and patches are views of the shared ones
        assert sorted(p.name for p in (atlas / layer / "img").iterdir()) == sorted(f"thumb_{c}.png" for c in range(n))
    page = (atlas / "conv" / "neuron_0.html").read_text()
    sources = img_sources(atlas / "conv" / "neuron_0.html")
    shared = {f"../images/{p.name}" for p in (atlas / "images").iterdir()}
    assert sum(s in shared for s in sources) == 4
    crops = re.findall(r'<div class="crop" style="([^"]*)">', page)
    assert len(crops) == 2 and all(re.search(r"url\((\.\./images/[0-9a-f]+\.png)\)", c).group(1) in shared
                                   for c in crops)
    # a 16 px patch at (0, 0) of a 32 px image, shown at 64 px: the image scaled 4x, not shifted
    assert "width:64px;height:64px;" in crops[0] and "background-size:128.00px 128.00px;" in crops[0]
    assert "background-position:0.00px 0.00px" in crops[0]
    neighbours = [s for s in sources if s.startswith("img/thumb_")]
    assert len(neighbours) == 6  # the nearest neurons in DORA's map, by their shared thumbnails
    grid = img_sources(atlas / "conv" / "index.html")
    assert grid == [f"img/thumb_{c}.png" for c in range(8)] and "neuron_1.html" in page  # next neuron
    assert len(list(atlas.rglob("*"))) < 80


def test_token_layer_pages_mark_the_token_cell(synthetic_atlas):
    work, *_ = synthetic_atlas
    page = (work / "atlas" / "blocks.1" / "neuron_2.html").read_text()
    assert "Token layer: each patch is the token's 4 px cell (framed) with 20 px of context." in page
    # token (1, 2) of the 8 x 8 grid: rows 4..8, columns 8..12 of 32 px, framed over the shared image in percent
    assert page.count('<span style="top:12.500%;left:25.000%;height:12.500%;width:12.500%"></span>') >= 1
    # its patch: the 20 px context, shifted inside the image to rows 0..20, columns 0..20 (shown 4x: 80 px), the
    # token framed at rows 4..8, columns 8..12 of it
    crop = re.search(r'<div class="crop" style="([^"]*)">(.*?)</div>', page)
    assert "width:80px;height:80px;" in crop.group(1) and "background-size:128.00px 128.00px;" in crop.group(1)
    assert "background-position:0.00px 0.00px" in crop.group(1)
    assert crop.group(2) == '<span style="top:20.000%;left:40.000%;height:20.000%;width:20.000%"></span>'
    from PIL import Image

    with Image.open(work / "atlas" / "blocks.1" / "img" / "thumb_2.png") as thumb:
        px = np.asarray(thumb.convert("RGB"))
    scale = 64 / 20  # the token: rows 4..8, columns 8..12 of its 20 px context (shifted inside), framed outside
    assert tuple(px[round(4 * scale) - 1, round(10 * scale)]) == (255, 215, 0)
    assert tuple(px[round(6 * scale), round(8 * scale) - 1]) == (255, 215, 0)


def test_layer_grid_carries_labels_and_outlier_marks(synthetic_atlas):
    work, _, _, _, dora, invert = synthetic_atlas
    index = (work / "atlas" / "conv" / "index.html").read_text()
    cells = re.findall(r'<a class="n( out)?" href="neuron_(\d+).html"([^>]*)>(.*?)</a>', index)
    assert [int(c[1]) for c in cells] == list(range(8))
    for out, c, attrs, inner in cells:
        c = int(c)
        d, i = dora.set_index("neuron").loc[c], invert.set_index("neuron").loc[c]
        assert bool(out) == bool(d.outlier) and (f'data-outlier="{int(d.outlier)}"' in attrs)
        assert ("DORA outlier" in inner) == bool(d.outlier) and f'data-lof="{d.lof:.6g}"' in attrs
        if isinstance(i.formula, str):
            assert html.escape(i.formula) in inner and f"AUC {i.auc:.3f}" in inner
            assert f'data-auc="{i.auc:.6g}"' in attrs
        else:
            assert "no INVERT label" in inner and 'data-auc=""' in attrs
    assert '<option value="auc">' in index and '<option value="lof">' in index
    plain = (work / "atlas" / "blocks.1" / "index.html").read_text()
    assert '<option value="auc" disabled>' in plain  # no INVERT table: nothing to sort by


def test_a_layer_with_dora_only_gets_a_page_of_its_units_with_their_mantel_test(atlas_run, tmp_path, monkeypatch):
    """The output layer's page (semantics: DORA of the units, judged against WordNet): no top-N images or patches,
    the Mantel test's r and p, and a row per unit with its class and s-AMS; a labelled layer shows the test too."""
    from peekflow.neurons.atlas import LayerInputs, build_atlas

    monkeypatch.chdir(atlas_run)
    stem = atlas_run / "results" / "neurons" / MODEL / LAYER
    dora = pd.read_csv(stem / "dora.csv")
    units = dora.loc[dora["activated"], "neuron"].tolist()
    mantel = {"r": 0.4321, "p": 0.0123, "permutations": 999, "exact": False, "n": len(units), "entries": 3,
              "method": "pearson", "alternative": "two-sided", "seed": 0}
    (tmp_path / "dora_wordnet.json").write_text(json.dumps({
        "mantel": mantel, "mantel_r": mantel["r"], "mantel_p": mantel["p"], "units": units,
        "classes": [f"class <{u}>" for u in units], "left_out": dora.loc[~dora["activated"], "neuron"].tolist()}))
    judged = {"dora": str(stem / "dora.csv"), "dora_figure": str(stem / "dora.png"),
              "dora_signals": str(stem / "dora_signals.h5"), "dora_wordnet": str(tmp_path / "dora_wordnet.json")}
    inputs = {"fc": LayerInputs(**judged),
              LAYER: LayerInputs(topn=str(stem / "topn.h5"), patches=str(stem / "patches"), **judged)}
    assert build_atlas(tmp_path / "atlas", MODEL, inputs) == {"fc": len(dora), LAYER: 2}
    page = tmp_path / "atlas" / "fc" / "index.html"
    text = page.read_text()
    assert "r = 0.432" in text and "p = 0.0123" in text and "999 random relabellings, seed 0" in text
    assert "no top-N images or patches" in text and "neuron_" not in text
    assert f"<td>{units[0]}</td><td>class &lt;{units[0]}&gt;</td>" in text
    assert len(img_sources(page)) == len(dora) and all((page.parent / src).is_file() for src in img_sources(page))
    assert (page.parent / "img" / "dora.png").is_file() and 'href="img/dora.png"' in text
    assert "r = 0.432" in (tmp_path / "atlas" / LAYER / "index.html").read_text()


# After the page has loaded: every image made eager, then, once all are complete, [src, naturalWidth] of each image
# and the number of neurons the filter shows for a concept no neuron has, written into <body data-probe>.
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = [].slice.call(document.images);
  imgs.forEach(function (i) { i.loading = 'eager'; });
  var t = setInterval(function () {
    if (!imgs.every(function (i) { return i.complete; })) return;
    clearInterval(t);
    var shown = null, box = document.getElementById('concept');
    if (box) { box.value = 'no concept is called this'; applyFilter(); shown = document.getElementById('shown').textContent; }
    document.body.setAttribute('data-probe', JSON.stringify({images: imgs.map(function (i) {
      return [i.getAttribute('src'), i.naturalWidth]; }), shown: shown}));
  }, 50);
});
</script></body>"""


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium; .ci/run installs it as root)")
    return exe


def headless(exe: str, *args: str) -> str:
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,2000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def probed(exe: str, page, script: str) -> dict:
    """The JSON a probe `script` (inserted before </body>) leaves in <body data-probe> of `page` in Chromium."""
    probe = page.with_name(f"_probe_{page.name}")  # beside the page, so its relative image paths resolve
    probe.write_text(page.read_text().replace("</body>", script))
    try:
        dom = headless(exe, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.slow
@pytest.mark.parametrize("page", ["index.html", "neuron_0.html"])
def test_chromium_loads_every_image(atlas_run, tmp_path, page):
    exe = chromium()
    layer = atlas_run / "results" / "atlas" / MODEL / LAYER
    result = probed(exe, layer / page, PROBE)
    assert result["images"] and all(width > 0 for _, width in result["images"]), result
    if page == "index.html":
        assert result["shown"] == "0"
    shot = tmp_path / f"{page}.png"
    headless(exe, f"--screenshot={shot}", (layer / page).as_uri())
    assert shot.is_file() and shot.stat().st_size > 1000


# The visible neurons, in page order, after each of a series of views (sort key, label text, outliers, labelled).
VIEWS = """<script>
window.addEventListener('load', function () {
  var views = [['auc', '', false, false], ['lof', '', false, false], ['act', '', false, false],
               ['neuron', '', true, false], ['auc', 'a', false, false], ['lof', '', false, true]];
  var seen = views.map(function (v) {
    document.getElementById('sort').value = v[0];
    document.getElementById('concept').value = v[1];
    document.getElementById('outliers').checked = v[2];
    document.getElementById('labelled').checked = v[3];
    applyView();
    return [].slice.call(document.querySelectorAll('#grid .n')).filter(function (e) {
      return e.style.display !== 'none'; }).map(function (e) { return +e.getAttribute('data-neuron'); });
  });
  document.body.setAttribute('data-probe', JSON.stringify({views: seen,
    shown: document.getElementById('shown').textContent}));
});
</script></body>"""


@pytest.mark.slow
def test_chromium_sorts_and_filters_the_layer_grid(synthetic_atlas):
    exe = chromium()
    work, _, _, _, dora, invert = synthetic_atlas
    result = probed(exe, work / "atlas" / "conv" / "index.html", VIEWS)
    labelled = invert.dropna(subset=["formula"])
    by_auc = labelled.sort_values("auc", ascending=False, kind="stable")["neuron"].tolist() + [2]  # unlabelled last
    by_lof = dora.sort_values("lof", ascending=False, kind="stable")["neuron"].tolist()  # ties: lower neuron first
    assert result["views"][0] == by_auc and result["views"][1] == by_lof
    assert result["views"][2] == list(range(7, -1, -1))  # the synthetic top activations grow with the neuron
    assert result["views"][3] == [3, 5]  # DORA outliers only
    assert result["views"][4] == [n for n in by_auc if "a" in str(invert.set_index("neuron").formula[n]).lower()
                                  and n != 2]
    assert result["views"][5] == [n for n in by_lof if n != 2] and result["shown"] == "7"  # labelled only


def test_vital_reference_images_are_the_top_n_images_as_the_model_sees_them(atlas_run, monkeypatch):
    """VITAL's `reference: images`: the channel's best top-N images, preprocessed as the top-N file records."""
    import numpy as np

    from peekflow.data.folder import Preprocessing
    from peekflow.neurons.patches import load_images
    from peekflow.neurons.topn import read_topn
    from peekflow.neurons.vital import VitalSettings
    from peekflow.neurons.vital_files import reference_images

    monkeypatch.chdir(atlas_run)
    stem = atlas_run / "results" / "neurons" / MODEL / LAYER
    layer, channels, refs = reference_images(stem / "patches", stem / "topn.h5",
                                             VitalSettings(channels=[1], reference="images", references=3))
    topn = read_topn(stem / "topn.h5")
    want = load_images(topn.paths[1][:3], Preprocessing(**json.loads(topn.attrs["preprocessing"])))
    assert layer == LAYER and channels.tolist() == [1] and refs.shape == (1, 3, *want[0].shape)
    assert np.array_equal(refs[0], np.stack([np.rint(w.numpy() * 255).astype(np.uint8) for w in want]))
