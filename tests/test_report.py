"""`snakemake --report` on the finished tiny run: every figure a rule wrote, each with its caption, grouped by stage."""

import json
import re
import zipfile

import pytest

from workflow import ROOT, snakemake, wordnet_missing

SEMANTICS = not wordnet_missing()  # the tiny config's semantics block (dropped where WordNet is not installed)

# figure (path under results/) -> the opening of its caption in workflow/report/, with the wildcards filled in
CAPTIONS = [
    (r"prototypes/tiny_resnet/(deepdream|deepinversion)\.png", r"Class prototypes of model <strong>tiny_resnet</strong>"
                                                              r" by <strong>\1</strong>"),
    (r"prototypes/tiny_resnet/caricature\.png", "Caricatures of real images by model <strong>tiny_resnet</strong>"),
    (r"probing/tiny_resnet/tiny_vgg/similarity\.png", "PEEK probing of model <strong>tiny_resnet</strong> by the probe"
                                                     " model <strong>tiny_vgg</strong>"),
    (r"ood/tiny_resnet/figures/(\w+)_roc\.png", r"ROC curves of the OOD detector <strong>\1</strong>"),
    (r"ood/tiny_resnet/figures/(\w+)_hist\.png", r"Score histograms of the OOD detector <strong>\1</strong>"),
    (r"neurons/tiny_resnet/(\w+)/patches/overview\.png", r"Overview of the neurons of layer <strong>\1</strong>"),
    (r"neurons/tiny_resnet/(\w+)/vital\.png", r"VITAL on layer <strong>\1</strong>"),
    (r"neurons/tiny_resnet/(\w+)/dora\.png", r"DORA outlier neurons of layer <strong>\1</strong>"),
    (r"neurons/tiny_resnet/(\w+)/invert\.png", r"INVERT labels of layer <strong>\1</strong>"),
    (r"emergence/tiny_resnet/layer\d\.png", "Emergence of visual patterns in model <strong>tiny_resnet</strong>"),
    (r"emergence/tiny_resnet/knowledge_points\.png", "Knowledge points per layer of model <strong>tiny_resnet</strong>"),
    (r"emergence/tiny_resnet/trajectory\.png", "A PGD adversarial attack traced"),
    (r"semantics/(\w+)/matrices\.png", r"WordNet semantics of the classes of model <strong>\1</strong>"),
    (r"probing/tiny_resnet/tiny_vgg/semantics\.png", "PEEK probing of model <strong>tiny_resnet</strong> by the probe"
                                                    " model <strong>tiny_vgg</strong>, judged"),
]


def _js_value(html: str, name: str):
    """The JSON value (object or string) the report's page assigns to `var <name>`."""
    start = re.search(rf"var {name} = (?=[{{\"])", html).end()
    return json.JSONDecoder().raw_decode(html, start)[0]


@pytest.fixture(scope="module")
def report(finished_run):
    path = finished_run / "report.zip"
    result = snakemake(finished_run, "--report", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    archive = zipfile.ZipFile(path)
    html = archive.read("report/report.html").decode()
    return archive, _js_value(html, "results"), _js_value(html, "categories"), _js_value(html, "workflow_desc")


def test_report_carries_every_figure_of_the_run(finished_run, report):
    archive, results, _, _ = report
    # every PNG but the neuron atlas's (its own site) and the per-channel patch grids (browsed in the atlas)
    figures = sorted(str(p.relative_to(finished_run)) for p in (finished_run / "results").rglob("*.png")
                     if not p.name.startswith("channel_") and "results/atlas/" not in p.as_posix())
    assert list((finished_run / "results" / "neurons" / "tiny_resnet" / "layer4" / "patches").glob("channel_*.png"))
    assert sorted(results) == figures
    kinds = {path.rsplit("/", 1)[-1] for path in figures}
    assert {"deepdream.png", "caricature.png", "similarity.png", "knn_roc.png", "knn_hist.png", "overview.png",
            "dora.png", "invert.png", "layer3.png", "knowledge_points.png", "trajectory.png", "vital.png",
            *(["matrices.png", "semantics.png"] if SEMANTICS else [])} <= kinds
    for path, entry in results.items():  # the zip holds each figure byte for byte
        assert archive.read(f"report/{entry['data_uri']}") == (finished_run / path).read_bytes(), path


def test_every_figure_has_its_caption_with_the_wildcards(report):
    _, results, _, description = report
    for path, entry in results.items():
        matches = [re.sub(pattern, opening, path.removeprefix("results/")) for pattern, opening in CAPTIONS
                   if re.fullmatch(pattern, path.removeprefix("results/"))]
        assert len(matches) == 1, path
        assert entry["caption"].startswith(f"<p>{matches[0]}"), (path, entry["caption"][:200])
        assert "How to read it" in entry["caption"] and "system-message" not in entry["caption"], path
    assert description.startswith('<div class="document">\n<p>peekflow asks what a vision network knows')


def test_figures_are_grouped_by_stage_then_model_and_layer(report):
    _, results, categories, _ = report
    semantic = {"7. Semantics": ["tiny_resnet", "tiny_vgg"]} if SEMANTICS else {}
    assert {stage: sorted(groups) for stage, groups in categories.items()} == {
        "1. OOD detection": ["tiny_resnet"], "2. Prototypes": ["tiny_resnet"], "3. Probing": ["tiny_resnet"],
        "4. Neuron patches": ["tiny_resnet: layer3", "tiny_resnet: layer4"],
        "5. Neuron labels": [*(["tiny_resnet: fc"] if SEMANTICS else []), "tiny_resnet: layer4"],
        "6. Emergence": ["tiny_resnet"], **semantic}
    for stage, groups in categories.items():
        for group, paths in groups.items():
            # the report shows one figure per distinct label set (and a two-valued label as a toggle): a repeated
            # label set would hide a figure
            labels = [json.dumps(results[p]["labels"], sort_keys=True) for p in paths]
            assert len(set(labels)) == len(labels), (stage, group)
    ood = categories["1. OOD detection"]["tiny_resnet"]
    assert {results[p]["labels"]["figure"] for p in ood} == {"ROC curves", "score histograms"}
    patches = sorted(results[p]["labels"]["figure"] for p in categories["4. Neuron patches"]["tiny_resnet: layer4"])
    assert patches == ["VITAL (plain | VITAL | patches)", "all channels (overview)"]


def test_every_caption_file_is_used():
    rules = "".join(p.read_text() for p in [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))])
    for caption in sorted((ROOT / "workflow" / "report").glob("*.rst")):
        assert f"report/{caption.name}" in rules, caption.name


@pytest.mark.slow
def test_html_report_embeds_every_figure(finished_run, report):
    """The single-file report.html (the README's command) holds the same figures, each as a data URI."""
    path = finished_run / "report.html"
    result = snakemake(finished_run, "--report", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    results = _js_value(path.read_text(), "results")
    assert sorted(results) == sorted(report[1])
    assert all(entry["data_uri"].startswith("data:image/png") for entry in results.values())
