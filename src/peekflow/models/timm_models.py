"""timm models by name, offline: `arch: timm/<name>` builds `timm.create_model(name, pretrained=False, ...)`; weights
come only from a local file (.safetensors or .pth, read in checkpoint.py) passed through the model's own timm
checkpoint filter (e.g. a ViT's position embeddings resized, original-format keys renamed), as
`timm.models.load_checkpoint` does; preprocessing defaults to the model's timm data config."""

from __future__ import annotations

import difflib
import math
import sys

from torch import nn

PREFIX = "timm/"


def is_timm(arch: str) -> bool:
    return arch.startswith(PREFIX)


def timm_name(arch: str) -> str:
    """The timm model name of `arch`; a name timm does not know fails with the closest known names."""
    import timm

    name = arch.removeprefix(PREFIX)
    if timm.is_model(name):
        return name
    family = name.split("_")[0]
    close = difflib.get_close_matches(name, timm.list_models(f"{family}*") or timm.list_models(), n=5, cutoff=0.5)
    raise ValueError(f"timm knows no model {name!r}" + (f"; close matches: {close}" if close else
                                                           f"; see timm.list_models('{family}*')"))


def build_timm(arch: str, num_classes: int, **kwargs) -> nn.Module:
    import timm

    return timm.create_model(timm_name(arch), pretrained=False, num_classes=num_classes, **kwargs)


def timm_filtered(state: dict, model: nn.Module) -> dict:
    """A state dict as `model` takes it: passed through the model's timm checkpoint filter if it has one."""
    filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    return filter_fn(state, model) if filter_fn else state


def timm_preprocessing(model: nn.Module) -> dict:
    """peekflow's preprocessing from the model's timm data config: resize to crop / crop_pct, centre crop, its mean,
    std and interpolation. The crop is the model's own input size when it was built with another `img_size`."""
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    crop = int(cfg["input_size"][-1])
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size:
        crop = int(img_size[-1] if isinstance(img_size, (tuple, list)) else img_size)
    interpolation = cfg.get("interpolation", "bilinear")
    return {
        "resize": math.floor(crop / cfg.get("crop_pct", 1.0)),
        "crop": crop,
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
        "interpolation": interpolation if interpolation in ("nearest", "bilinear", "bicubic") else "bilinear",
    }


def crop_note(prep: dict, key: str) -> str | None:
    """What preprocessing `prep` from a timm data config cuts off each image, and the key (`key`: the model's config
    path) that overrides it; None where it does not crop."""
    resize, crop = prep.get("resize"), prep.get("crop")
    if not resize or not crop or resize <= crop:
        return None
    mean, std = ([round(v, 4) for v in prep[k]] for k in ("mean", "std"))
    lost = 1 - (crop / resize) ** 2
    return (f"{key}.preprocessing is not given, so timm's data config sets it: the shorter side resized to {resize} "
            f"px, then a centre crop of {crop} px ({prep['interpolation']}), which cuts off {lost:.0%} "
            f"of a square image; for a model trained on whole {crop} px images set {key}.preprocessing: "
            f"{{resize: {crop}, crop: {crop}, mean: {mean}, std: {std}}}")
