"""Receptive fields, map- and window-mode patches on a planted bright-square detector, the CLI and its errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from peekflow.cli import main
from peekflow.data.folder import Preprocessing
from peekflow.models.registry import build_model
from peekflow.neurons.patch_files import read_patches
from peekflow.neurons.patches import PatchSettings, crop_patches, find_patches, select_channels, window_grid
from peekflow.neurons.receptive_field import ReceptiveField, forward_to, receptive_field
from peekflow.neurons.topn import top_n

from conftest import TINY_MODEL, write_folder
from test_neurons_topn import write_store


def analytic_field(layers):
    """Textbook recursion over a chain of (kernel, stride, padding): size, stride and top-left offset of unit 0."""
    size, jump, offset = 1, 1, 0
    for k, s, p in layers:
        size, offset, jump = size + (k - 1) * jump, offset - p * jump, jump * s
    return size, jump, offset


@pytest.mark.parametrize("chain", [
    [("conv", 3, 1, 1), ("conv", 3, 2, 1), ("max", 2, 2, 0)],
    [("conv", 7, 2, 3), ("max", 3, 2, 1), ("conv", 3, 1, 1), ("conv", 3, 1, 1)],
    [("conv", 5, 1, 0), ("avg", 2, 2, 0), ("conv", 1, 1, 0), ("conv", 4, 3, 2)],
])
def test_receptive_field_of_chains_matches_the_recursion(chain):
    modules, cin = [], 3
    for kind, k, s, p in chain:
        if kind == "conv":
            modules += [nn.Conv2d(cin, 4, k, s, p), nn.BatchNorm2d(4), nn.ReLU()]
            cin = 4
        else:
            modules.append((nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(k, s, p))
    model = nn.Sequential(*modules).eval()
    rf = receptive_field(model, str(len(modules) - 1), 16)  # grows the probe beyond 16 px when needed
    size, jump, offset = analytic_field([c[1:] for c in chain])
    assert rf.size == (size, size) and rf.stride == (jump, jump) and rf.offset == (offset, offset)


def test_receptive_field_of_small_resnet_layers():
    model = build_model("small_resnet", 10).eval()
    # stem 3x3/2, then two 3x3 convs per block, the first of each later block strided
    expected = {"layer1": (11, 2, -5), "layer2": (23, 4, -11), "layer3": (47, 8, -23), "layer4": (95, 16, -47)}
    for layer, (size, stride, offset) in expected.items():
        rf = receptive_field(model, layer, 64)
        assert (rf.size[0], rf.stride[0], rf.offset[0]) == (size, stride, offset), layer


def test_pixels_outside_the_field_do_not_change_the_unit():
    torch.manual_seed(0)
    model = build_model("small_resnet", 10, widths=[4, 8, 8, 8]).eval()
    rf = receptive_field(model, "layer2", 64)
    i, j = 5, 9
    top, left, bottom, right = rf.box(i, j)
    x = torch.randn(1, 3, 64, 64)
    outside, inside = x.clone(), x.clone()
    outside[..., :max(top, 0), :] = 5.0
    outside[..., :, right:] = -5.0
    inside[..., top, left + 3] += 5.0  # on the border of the field
    with torch.no_grad():
        unit = lambda z: forward_to(model, "layer2", z)[0, :, i, j]  # noqa: E731
        torch.testing.assert_close(unit(outside), unit(x))
        assert not torch.allclose(unit(inside), unit(x))


def test_unknown_layer_is_named():
    with pytest.raises(ValueError, match=r"\['nope'\] not in SmallResNet"):
        receptive_field(build_model("small_resnet", 10), "nope", 64)


def test_channel_selection_and_out_of_range_channel():
    np.testing.assert_array_equal(select_channels("all", 4, "l"), [0, 1, 2, 3])
    np.testing.assert_array_equal(select_channels("1:3", 4, "l"), [1, 2])
    np.testing.assert_array_equal(select_channels([3, 0], 4, "l"), [3, 0])
    with pytest.raises(ValueError, match=r"channel\(s\) \[7\] out of range: layer 'l' has 4 channels"):
        select_channels([1, 7], 4, "l")
    with pytest.raises(ValueError, match="expected"):
        select_channels("some", 4, "l")


# --- planted case: channel 0 sums brightness over a 9x9 field, then a 3x3 stride-2 average (receptive field 11 px)
SIZE, SQUARE = 48, 6


def square_detector() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 9, 1, 4), nn.ReLU(), nn.Conv2d(2, 2, 3, 2, 1), nn.ReLU())
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[0] = 1.0  # brightness of every colour channel
        model[0].weight[1, 2] = 1.0  # blue only
        model[0].bias.zero_()
        model[2].weight.zero_()
        model[2].weight[0, 0], model[2].weight[1, 1] = 1.0, 1.0
        model[2].bias.zero_()
    return model.eval()


@pytest.fixture
def planted(tmp_path):
    """12 black images with one bright square each (distinct brightness), their store and top-N file."""
    rng = np.random.default_rng(3)
    paths, squares = [], []
    for i, level in enumerate(rng.permutation(np.linspace(0.4, 1.0, 12))):
        top, left = rng.integers(0, SIZE - SQUARE, 2)
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        img[top:top + SQUARE, left:left + SQUARE] = int(255 * level)
        paths.append(str(tmp_path / f"{i:02d}.png"))
        Image.fromarray(img).save(paths[-1])
        squares.append((int(top), int(left)))
    prep = Preprocessing(mean=[0, 0, 0], std=[1, 1, 1])
    model = square_detector()
    x = torch.stack([prep(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        maxact = forward_to(model, "3", x).amax((2, 3)).numpy()
    store = write_store(tmp_path / "store.h5", maxact, layer="3")
    topn = top_n(store, "3", 6)
    topn.paths = np.vectorize(lambda i: paths[i], otypes=[object])(topn.indices)
    return model, topn, prep, squares


def test_rf_windows_are_the_fields_at_the_layer_stride_clipped_to_the_input():
    rf = ReceptiveField(size=(11, 11), stride=(2, 2), offset=(-5, -5))
    # the default, window_size = window_stride = "rf": map mode's boxes, the units' fields shifted inside the input
    boxes = window_grid(PatchSettings(mode="window"), rf, 48, 40)
    assert len(boxes) == 20 * 16 and boxes[:3] == [(0, 0, 11, 11), (0, 1, 11, 12), (0, 3, 11, 14)]
    assert boxes[-1] == (37, 29, 48, 40)
    # a field larger than the input: one window, the whole image (window mode then ranks images as the store does)
    huge = ReceptiveField(size=(95, 95), stride=(16, 16), offset=(-47, -47))
    assert window_grid(PatchSettings(), huge, 64, 64) == [(0, 0, 64, 64)]
    assert window_grid(PatchSettings(window_size=32, window_stride=16), huge, 64, 64) == [
        (t, l, t + 32, l + 32) for t in (0, 16, 32) for l in (0, 16, 32)]
    fields_every_3px = window_grid(PatchSettings(window_stride=3), rf, 48, 48)
    assert fields_every_3px[:3] == [(0, 0, 11, 11), (0, 1, 11, 12), (0, 4, 11, 15)]
    with pytest.raises(ValueError, match="window_size 65 exceeds the 64x64 model input"):
        window_grid(PatchSettings(window_size=65), huge, 64, 64)
    with pytest.raises(ValueError, match="window_stride: 'field' is not one of \\['rf'\\]"):
        PatchSettings(window_stride="field")


def test_rf_windows_are_the_boxes_map_mode_can_return():
    model = build_model("small_resnet", 10).eval()
    rf = receptive_field(model, "layer2", 64)  # 23 px, stride 4, offset -11: 16 x 16 units on a 64 px input
    with torch.no_grad():
        units = forward_to(model, "layer2", torch.zeros(1, 3, 64, 64)).shape[2]
    start = lambda i: min(max(rf.offset[0] + i * rf.stride[0], 0), 64 - 23)  # noqa: E731  shifted inside
    fields = {(start(i), start(j), start(i) + 23, start(j) + 23) for i in range(units) for j in range(units)}
    assert window_grid(PatchSettings(), rf, 64, 64) == sorted(fields)


@pytest.mark.parametrize("mode, window, side", [
    ("map", {}, 11), ("window", {"window_size": 16, "window_stride": 4}, 16), ("window", {}, 11)])
def test_patch_boxes_hold_the_planted_square(planted, mode, window, side):
    model, topn, prep, squares = planted
    settings = PatchSettings(mode=mode, k=4, **window)
    patches, info = find_patches(model, "3", topn, settings, prep, torch.device("cpu"))
    assert patches.boxes.shape == (2, 4, 4) and patches.pixels.shape[:3] == (2, 4, 3)
    for s in range(2):
        # k patches from k distinct images, the brightest square first (the store's ranking)
        np.testing.assert_array_equal(patches.rows[s], topn.indices[s, :4])
        for row, (t, l, b, r) in zip(patches.rows[s], patches.boxes[s]):
            st, sl = squares[row]
            assert t <= st and l <= sl and st + SQUARE <= b and sl + SQUARE <= r, (mode, s, row)
    assert info["receptive_field"] == {"size": [11, 11], "stride": [2, 2], "offset": [-5, -5]}
    assert (patches.boxes[..., 2:] - patches.boxes[..., :2] == side).all()
    if mode == "map":
        assert info["max_abs_diff_to_topn"] < 1e-4  # the patch activation is the store's spatial max
    elif not window:  # rf windows: the units' fields (odd pixels: offset -5, stride 2) or at the border
        assert info["windows"] == {"size": [11, 11], "per_image": 20 * 20}
        corners = patches.boxes[..., :2]
        assert ((corners % 2 == 1) | (corners == 0) | (corners == SIZE - 11)).all()
    np.testing.assert_array_equal(crop_patches(patches, prep), patches.pixels)  # reloaded = cached images
    # the pixels are the box's crop: the whole square is bright in the best patch
    t, l, _, _ = patches.boxes[0, 0]
    st, sl = squares[patches.rows[0, 0]]
    assert (patches.pixels[0, 0][:, st - t:st - t + SQUARE, sl - l:sl - l + SQUARE] > 0).all()


def test_per_image_allows_several_patches_of_one_image(planted):
    model, topn, prep, _ = planted
    settings = PatchSettings(mode="map", k=4, per_image=2, channels=[0])
    patches, _ = find_patches(model, "3", topn, settings, prep, torch.device("cpu"))
    assert len(set(patches.rows[0])) < 4  # ties at the square's maximum give two units in the best image


def test_k_beyond_candidates_is_explained(planted):
    model, topn, prep, _ = planted
    with pytest.raises(ValueError, match=r"k=7 exceeds top-N \(6\)"):
        find_patches(model, "3", topn, PatchSettings(k=7), prep, torch.device("cpu"))


def test_cli_writes_patch_folder(tmp_path, tiny_checkpoint, capsys):
    images = write_folder(tmp_path / "images", ["a", "b", "c"], per_class=4)
    store, topn, out = tmp_path / "store.h5", tmp_path / "topn.h5", tmp_path / "neurons" / "patches"
    settings = json.dumps({"layers": ["layer2"], "batch_size": 4})
    assert main(["extract", "--checkpoint", str(tiny_checkpoint), "--model", json.dumps(TINY_MODEL), "--images",
                 str(images), "--dataset-name", "tiny", "--settings", settings, "--device", "cpu", "--out", str(store)]) == 0
    assert main(["topn", "--store", str(store), "--layer", "layer2", "--n", "3", "--out", str(topn)]) == 0
    args = ["patches", "--checkpoint", str(tiny_checkpoint), "--model", json.dumps(TINY_MODEL), "--topn", str(topn),
            "--device", "cpu", "--out", str(out)]
    assert main([*args, "--settings", json.dumps({"channels": "1:3", "k": 2})]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["channel_1.png", "channel_2.png", "overview.png", "patches.h5"]
    patches, attrs = read_patches(out)
    np.testing.assert_array_equal(patches.channels, [1, 2])
    assert patches.pixels.dtype == np.uint8 and patches.pixels.shape == (2, 2, 3, 23, 23)
    assert attrs["layer"] == "layer2" and json.loads(attrs["info"])["max_abs_diff_to_topn"] < 1e-4
    assert all(str(p).startswith(str(images)) for p in patches.paths.ravel())

    # a failing run names the channel and keeps the previous folder
    assert main([*args, "--settings", json.dumps({"channels": [8]})]) == 1
    assert "channel(s) [8] out of range: layer 'layer2' has 8 channels" in capsys.readouterr().err
    assert (out / "patches.h5").exists()
    other = {**TINY_MODEL, "preprocessing": {"mean": [0.4] * 3, "std": [0.2] * 3}}
    args[args.index("--model") + 1] = json.dumps(other)
    assert main([*args, "--settings", json.dumps({"k": 2})]) == 1
    assert "ranks images under preprocessing" in capsys.readouterr().err


def test_overview_shows_the_first_channels_of_a_wide_layer(tmp_path):
    """overview.png (a report figure) holds the first OVERVIEW_CHANNELS channels' best patches; each channel keeps
    its own channel_<c>.png."""
    from PIL import Image

    from peekflow.neurons.patch_files import OVERVIEW_CHANNELS, write_patch_folder
    from peekflow.neurons.patches import Patches

    n = OVERVIEW_CHANNELS + 88
    p = Patches(channels=np.arange(n), rows=np.zeros((n, 1), np.int64), paths=np.full((n, 1), "x.png", object),
                boxes=np.zeros((n, 1, 4), np.int64), activations=np.ones((n, 1), np.float32),
                pixels=np.zeros((n, 1, 3, 4, 4), np.uint8))
    write_patch_folder(tmp_path / "patches", p, {"layer": "wide"}, overview_cell=8)
    ncol = int(np.ceil(np.sqrt(OVERVIEW_CHANNELS)))
    with Image.open(tmp_path / "patches" / "overview.png") as img:
        assert img.width == ncol * (8 + 2) + 2
    assert len(list((tmp_path / "patches").glob("channel_*.png"))) == n


# --- planted token layer: a ViT-shaped model whose channel 0 is a 4 px token's brightness, channel 1 its blue
class _Embed(nn.Module):
    patch_size = (4, 4)

    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, 2, 4, 4)
        with torch.no_grad():
            self.proj.weight.zero_()
            self.proj.weight[0] = 1.0 / 48
            self.proj.weight[1, 2] = 1.0 / 16
            self.proj.bias.zero_()

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, T, C]


class PlantedTokens(nn.Module):
    """timm's layout as models/tokens.py reads it: a class token, then 8 x 8 patch tokens of a 32 px input."""
    num_prefix_tokens, global_pool = 1, "token"

    def __init__(self):
        super().__init__()
        self.patch_embed, self.blocks, self.head = _Embed(), nn.Identity(), nn.Linear(2, 2)

    def forward(self, x):
        tokens = self.patch_embed(x)
        tokens = self.blocks(torch.cat([tokens.mean(1, keepdim=True), tokens], 1))
        return self.head(tokens[:, 0])


@pytest.fixture
def planted_tokens(tmp_path):
    """10 black 32 px images, each with one bright token cell (planted token index), their top-N file."""
    rng = np.random.default_rng(5)
    paths, tokens = [], [int(t) for t in rng.choice(64, 10, replace=False)]
    tokens[0] = 0  # a token in the corner: its context is shifted inside the image
    for i, (token, level) in enumerate(zip(tokens, np.linspace(1.0, 0.4, 10))):
        img = np.full((32, 32, 3), 20, np.uint8)
        row, col = divmod(token, 8)
        img[4 * row:4 * row + 4, 4 * col:4 * col + 4] = int(255 * level)
        paths.append(str(tmp_path / f"{i:02d}.png"))
        Image.fromarray(img).save(paths[-1])
    prep = Preprocessing(mean=[0, 0, 0], std=[1, 1, 1])
    model = PlantedTokens().eval()
    x = torch.stack([prep(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        maxact = forward_to(model, "blocks", x).amax((2, 3)).numpy()
    topn = top_n(write_store(tmp_path / "store.h5", maxact, layer="blocks"), "blocks", 6)
    topn.paths = np.vectorize(lambda i: paths[i], otypes=[object])(topn.indices)
    return model, topn, prep, tokens


@pytest.mark.parametrize("mode", ["map", "window"])
def test_token_patches_are_the_token_with_context_and_marked_at_the_planted_token(planted_tokens, mode, tmp_path):
    from peekflow.neurons.patch_files import write_patch_folder
    from peekflow.neurons.patches import CONTEXT_TOKENS, context_box, token_marks

    model, topn, prep, tokens = planted_tokens
    patches, info = find_patches(model, "blocks", topn, PatchSettings(mode=mode, k=4, channels=[0]), prep,
                                 torch.device("cpu"))
    side = 4 * CONTEXT_TOKENS
    assert info["token"] == {"cell": [4, 4], "context": [side, side], "input": [32, 32]}
    assert patches.pixels.shape == (1, 4, 3, side, side)  # not the bare 4 x 4 token
    marks = token_marks(patches, info)
    for j, row in enumerate(patches.rows[0]):
        row_, col = divmod(tokens[row], 8)
        assert tuple(patches.boxes[0, j]) == (4 * row_, 4 * col, 4 * row_ + 4, 4 * col + 4)  # the planted token
        t, l, b, r = marks[0, j]
        crop = patches.pixels[0, j]
        assert (crop[:, t:b, l:r] > 60).all()  # the mark is on the bright token inside its context ...
        assert (crop > 60).sum() == 3 * 16  # ... and the token is the only bright thing in it
        top, left, _, _ = context_box(patches.boxes[0, j], (side, side), (32, 32))
        assert (top, left) == (patches.boxes[0, j, 0] - t, patches.boxes[0, j, 1] - l)
        if tokens[row] == 0:
            assert (t, l) == (0, 0)  # the corner token: context shifted inside, the mark in its corner
        else:
            assert 0 <= t <= side - 4 and 0 <= l <= side - 4
    np.testing.assert_array_equal(crop_patches(patches, prep, context=(side, side)), patches.pixels)
    write_patch_folder(tmp_path / "patches", patches, {"layer": "blocks", "info": info})
    _, attrs = read_patches(tmp_path / "patches")
    assert np.array_equal(token_marks(patches, json.loads(attrs["info"])), marks)
    with Image.open(tmp_path / "patches" / "channel_0.png") as png:
        grid = np.asarray(png.convert("RGB"))
    scale = int(np.ceil(64 / side))  # the grid's cells: side * scale px, 2 px apart
    t, l, b, r = marks[0, 1]
    y0, x0 = 2, 2 + (side * scale + 2)  # the second cell
    frame = grid[y0 + t * scale - 1, x0 + l * scale:x0 + r * scale]  # the row just above the token
    assert (frame == (255, 215, 0)).all()
    inside = grid[y0 + t * scale + 1, x0 + l * scale + 1]
    assert inside[0] == inside[1] == inside[2]  # the token itself is not painted over
