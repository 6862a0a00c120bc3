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
    assert len(sources) == 4 + 2 + 2 + 1  # top-N 4 images with boxes, k=2 patches, plain and VITAL, DORA's s-AMS
    assert 'src="img/c1_sams0.png"' in page.read_text()
    for src in thumbs + sources:
        assert not src.startswith("data:") and (layer / src).is_file(), src
    text = page.read_text()
    assert html.escape(invert.loc[1, "formula"]) in text
    assert f"{dora.loc[1, 'lof']:.4g}" in text and 'href="img/dora.png"' in text and (layer / "img/dora.png").is_file()
    assert f'data-concept="{html.escape(invert.loc[1, "formula"].lower())}"' in index
    assert 'src="img/c1_plain.png"' in text and 'src="img/c1_vital.png"' in text
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


@pytest.mark.slow
@pytest.mark.parametrize("page", ["index.html", "neuron_0.html"])
def test_chromium_loads_every_image(atlas_run, tmp_path, page):
    exe = chromium()
    layer = atlas_run / "results" / "atlas" / MODEL / LAYER
    probe = layer / f"_probe_{page}"  # beside the page, so its relative image paths resolve
    probe.write_text((layer / page).read_text().replace("</body>", PROBE))
    try:
        dom = headless(exe, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    found = re.search(r'data-probe="([^"]*)"', dom)
    assert found, dom[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    assert result["images"] and all(width > 0 for _, width in result["images"]), result
    if page == "index.html":
        assert result["shown"] == "0"
    shot = tmp_path / f"{page}.png"
    headless(exe, f"--screenshot={shot}", (layer / page).as_uri())
    assert shot.is_file() and shot.stat().st_size > 1000


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
