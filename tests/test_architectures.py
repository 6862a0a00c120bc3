"""Every stage on every family: torchvision and timm CNNs and transformers, random weights, 64 px, CPU.

Per architecture: it builds, a nested layer is named by its module path, extraction stores pooled features and maps of
that layer, top-N and map-mode patches run on a few images, the DORA channel objective renders (2 steps), the
emergence analysis fits its stored maps (2 steps each), and DeepInversion either renders (1 step) or is refused by
preflight for want of batch norms. docs/architectures.md is
the table these tests establish.
"""

import numpy as np
import pytest
import torch

from conftest import write_folder
from peekflow.workflow import preflight
from peekflow.data.folder import Preprocessing
from peekflow.emergence.analysis import EmergenceSettings, analyse
from peekflow.features.extract import ExtractSettings, extract_features
from peekflow.models.registry import build_model
from peekflow.neurons.dora import DoraSettings, make_sams
from peekflow.neurons.patches import PatchSettings, find_patches
from peekflow.neurons.topn import top_n
from peekflow.prototypes.deepinversion import InversionSettings, make_deepinversion

SIZE, CLASSES = 64, ["a", "b"]
# arch: (arch_kwargs for a 64 px input, nested layer, its channels and map side at 64 px, has batch norm). The CNN
# layers are early or mid-depth: measuring a deep layer's receptive field probes inputs of 512-2048 px (tens of seconds
# on a CPU for DenseNet's layer 3).
ARCHS = {
    "resnet50": ({}, "layer2.3", 512, 8, True),
    "densenet121": ({}, "features.denseblock1", 256, 16, True),
    "efficientnet_b0": ({}, "features.3", 40, 8, True),
    "convnext_tiny": ({}, "features.1", 96, 16, False),
    "vit_b_16": ({"image_size": SIZE}, "encoder.layers.encoder_layer_11", 768, 4, False),
    "timm/resnet50": ({}, "layer2.3", 512, 8, True),
    "timm/vit_small_patch16_224": ({"img_size": SIZE}, "blocks.11", 384, 4, False),
    "timm/deit_tiny_patch16_224": ({"img_size": SIZE}, "blocks.11", 192, 4, False),
    "timm/swin_tiny_patch4_window7_224": ({"img_size": SIZE}, "layers.2.blocks.1", 384, 4, False),
}
PREP = Preprocessing(crop=SIZE)


@pytest.fixture(scope="module", params=ARCHS)
def arch(request):
    """Module-scoped and parametrised: pytest runs every test of one architecture before building the next."""
    return request.param


@pytest.fixture(scope="module")
def model(arch):
    torch.manual_seed(0)
    return build_model(arch, len(CLASSES), **ARCHS[arch][0]).eval()


@pytest.fixture(scope="module")
def store(tmp_path_factory, arch, model):
    images = write_folder(tmp_path_factory.mktemp("arch") / "images", CLASSES, per_class=2, size=SIZE)
    layer, out = ARCHS[arch][1], tmp_path_factory.mktemp("stores") / "store.h5"
    settings = ExtractSettings(layers=[layer], maps=[layer], batch_size=4)
    extract_features(model, images, CLASSES, PREP, settings, torch.device("cpu"), out, {})
    return out


def test_builds_and_names_a_nested_layer(arch, model):
    preflight.check_layers(model, [ARCHS[arch][1]])
    with pytest.raises(ValueError, match="nearest valid"):
        preflight.check_layers(model, [ARCHS[arch][1] + "9"])


def test_extraction_stores_pooled_features_and_maps(arch, store):
    import h5py

    _, layer, channels, side, _ = ARCHS[arch]
    with h5py.File(store) as h5:
        assert h5["logits"].shape == (4, 2)
        assert h5[f"features/{layer}"].shape == h5[f"maxact/{layer}"].shape == (4, channels)
        assert h5[f"maps/{layer}"].shape == (4, channels, side, side)


def test_topn_and_patches(arch, model, store):
    layer = ARCHS[arch][1]
    topn = top_n(store, layer, 2)
    assert topn.indices.shape == (ARCHS[arch][2], 2)
    patches, info = find_patches(model, layer, topn, PatchSettings(channels=[0, 1], k=2), PREP, "cpu")
    assert patches.pixels.shape[:2] == (2, 2) and patches.boxes.shape == (2, 2, 4)
    assert info["max_abs_diff_to_topn"] < 1e-2  # float16 maps aside, the patch search sees what the store saw
    # a field as large as the input is reported (mid-depth CNN layers at 64 px); a token's field is its patch
    assert info.get("whole_image_patches", False) == (info["receptive_field"]["size"][0] >= SIZE)


def test_dora_channel_objective_renders(arch, model):
    s = DoraSettings(steps=2, size=SIZE, batch_size=2, fold_bn=False)
    images = make_sams(model, ARCHS[arch][1], [0, 1], PREP, s, SIZE, torch.device("cpu"))
    assert images.shape == (2, 3, SIZE, SIZE) and np.isfinite(images).all()


def test_deepinversion_runs_or_is_refused_for_want_of_batch_norm(arch, model):
    kwargs, _, _, _, has_bn = ARCHS[arch]
    config = {"models": {"m": {"arch": arch, "num_classes": 2, "arch_kwargs": kwargs}},
              "prototypes": {"methods": {"deepinversion": {}}}}
    problems = preflight.prototype_problems(config, "m")
    s = InversionSettings(steps=1, warmup=0, per_class=1, size=SIZE, fold_bn=False, amp=False)
    if has_bn:
        assert problems == []
        protos = make_deepinversion(model, CLASSES, PREP, s, device="cpu")
        assert protos.images.shape == (2, 3, SIZE, SIZE)
    else:
        assert problems == [f"prototypes.methods.deepinversion: DeepInversion matches batch-norm statistics, but "
                            f"models.m ({arch}) has no BatchNorm2d layer (a vision transformer has none): use "
                            f"deepdream, or set r_feature: 0"]
        with pytest.raises(ValueError, match="has no BatchNorm2d layer"):
            make_deepinversion(model, CLASSES, PREP, s, device="cpu")


def test_emergence_analyses_the_stored_maps(arch, store):
    s = EmergenceSettings(per_class=2, grid=2, sample_steps=2, importance_steps=2, regional_steps=2)
    ((_, result),) = list(analyse(store, [ARCHS[arch][1]], s, device="cpu"))
    assert result.features.shape == (4, ARCHS[arch][2]) and result.region_emb.shape == (4, 4, s.dims)
