import pytest
import torch

from peekflow.models.checkpoint import load_model, save_checkpoint
from peekflow.models.layers import get_layers, pool, record_layers
from peekflow.models.registry import available_models, build_model
from peekflow.models.spec import ModelSpec, load_spec


@pytest.mark.parametrize("arch", ["small_resnet", "small_vgg", "resnet18"])
def test_registry_builds_with_num_classes(arch):
    model = build_model(arch, 7)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_registry_unknown_name_lists_choices():
    with pytest.raises(ValueError, match=r"unknown model architecture 'resnet_9000'.*small_resnet"):
        build_model("resnet_9000", 10)
    assert {"small_resnet", "small_vgg", "resnet50", "vit_b_16"} <= set(available_models())


def test_wrong_layer_name_lists_valid_names():
    model = build_model("small_resnet", 3)
    with pytest.raises(ValueError, match=r"\['layer9'\] not in SmallResNet; valid names: \['conv1', 'bn1'"):
        get_layers(model, ["layer4", "layer9"])


def test_record_layers_matches_manual_forward_and_removes_hooks():
    torch.manual_seed(0)
    model = build_model("small_resnet", 3).eval()
    x = torch.randn(2, 3, 64, 64)
    with record_layers(model, ["layer3", "layer4"]) as acts:
        logits = model(x)
    # recompute layer4 by hand and the logits from its pooled output
    h = model.relu(model.bn1(model.conv1(x)))
    h4 = model.layer4(model.layer3(model.layer2(model.layer1(h))))
    assert torch.allclose(acts["layer4"], h4)
    mean, mx = pool(acts["layer4"])
    assert torch.allclose(model.fc(mean), logits, atol=1e-6)
    assert torch.equal(mx, h4.flatten(2).max(-1).values)
    assert all(not m._forward_hooks for m in model.modules())


def test_checkpoint_round_trip(tmp_path):
    model = build_model("small_resnet", 3, widths=[4, 8, 8, 8]).eval()
    save_checkpoint(tmp_path / "m.pt", model, "small_resnet", ["x", "y", "z"], {"widths": [4, 8, 8, 8]})
    loaded, meta = load_model(tmp_path / "m.pt", "small_resnet", 3)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(loaded(x), model(x)) and meta["classes"] == ["x", "y", "z"]


def test_plain_state_dict_with_module_prefix_loads(tmp_path):
    model = build_model("resnet18", 5).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "r.pth")
    spec = ModelSpec(name="r18", arch="resnet18", num_classes=5, classes=list("abcde"))
    loaded, classes = load_spec(spec, tmp_path / "r.pth")
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(loaded(x), model(x)) and classes == list("abcde")


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_model(tmp_path / "nope.pt", "resnet18", 5)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt cannot be loaded"):
        load_model(tmp_path / "junk.pt", "resnet18", 5)
    torch.save(build_model("resnet18", 5).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match=r"r18.pth does not fit resnet50"):
        load_model(tmp_path / "r18.pth", "resnet50", 5)


def test_spec_needs_class_names_for_foreign_checkpoints(tmp_path):
    torch.save(build_model("resnet18", 2).state_dict(), tmp_path / "r.pth")
    with pytest.raises(ValueError, match="model 'r': .* set classes, classes_file or classes_from_folder"):
        load_spec(ModelSpec(name="r", arch="resnet18", num_classes=2), tmp_path / "r.pth")
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    _, classes = load_spec(ModelSpec(name="r", arch="resnet18", num_classes=2, classes_file=str(tmp_path / "classes.txt")), tmp_path / "r.pth")
    assert classes == ["cat", "dog"]


@pytest.mark.parametrize("size, resize, crop", [((50, 37), 32, 28), ((37, 50), 32, 28), ((20, 24), None, 28), ((64, 64), None, None)])
def test_preprocessing_matches_torchvision_classic_eval_transform(size, resize, crop):
    import numpy as np
    from PIL import Image
    from torchvision import transforms as T

    from peekflow.data.folder import Preprocessing

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size[::-1], 3), dtype=np.uint8))
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.25]
    steps = ([T.Resize(resize)] if resize else []) + ([T.CenterCrop(crop)] if crop else [])
    reference = T.Compose([*steps, T.ToTensor(), T.Normalize(mean, std)])(img)
    ours = Preprocessing(resize=resize, crop=crop, mean=mean, std=std)(img)
    assert ours.shape == reference.shape and torch.allclose(ours, reference, atol=1e-5)


def test_augmentation_is_seeded_and_keeps_shape():
    from peekflow.models.training import augment

    x = torch.randn(6, 3, 16, 16)
    a = augment(x, torch.Generator().manual_seed(1))
    b = augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
