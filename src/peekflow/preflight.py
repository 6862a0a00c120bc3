"""Cheap checks of user-provided inputs, run before any job is submitted (workflow/rules/preflight.smk): an image
folder holds images, a checkpoint loads and fits its architecture, layer names exist. Each returns nothing or raises
ValueError / FileNotFoundError with a one-line reason; the caller names the config key."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

from torch import nn

from peekflow.data.folder import IMAGE_SUFFIXES
from peekflow.models.checkpoint import fitting_arch_kwargs, read_checkpoint
from peekflow.models.layers import layer_names
from peekflow.models.registry import build_model


def check_image_folder(path) -> None:
    """`path` is a directory with at least one image in the <class>/<image> layout (stops at the first image found)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist or is not a directory")
    with os.scandir(root) as entries:
        class_dirs = sorted(e.path for e in entries if e.is_dir())
    for class_dir in class_dirs:
        with os.scandir(class_dir) as entries:
            if any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES for e in entries):
                return
    raise ValueError(f"{root} holds no images in <class>/<image> layout ({len(class_dirs)} class folders)")


def abstract_model(arch: str, num_classes: int, arch_kwargs: dict | None = None) -> nn.Module:
    """The architecture, randomly initialised on the CPU (names and shapes are what count; callers only read them).
    Not on the meta device: its first weight initialisation imports torch._dynamo, seconds more than building a
    ResNet-50 on the CPU. Built once per architecture: the layer check and the checkpoint check both ask for it."""
    return _built(arch, num_classes, json.dumps(arch_kwargs or {}, sort_keys=True))


@functools.lru_cache(maxsize=None)
def _built(arch: str, num_classes: int, arch_kwargs: str) -> nn.Module:
    return build_model(arch, num_classes, **json.loads(arch_kwargs))


def check_layers(model: nn.Module, layers: list[str]) -> None:
    names = set(layer_names(model))
    wrong = [layer for layer in layers if layer not in names]
    if wrong:
        shown = [n for n in layer_names(model) if n.count(".") == 0]
        raise ValueError(f"layer(s) {wrong} not in {type(model).__name__}; top-level layers: {shown}")


def check_checkpoint(path, arch: str, num_classes: int, arch_kwargs: dict | None = None) -> dict:
    """The checkpoint loads (CPU, weights only) and its tensors fit `arch` by name and shape; returns its metadata."""
    ckpt = read_checkpoint(path)
    arch_kwargs = fitting_arch_kwargs(ckpt, path, arch, num_classes, arch_kwargs)
    expected = {k: tuple(v.shape) for k, v in abstract_model(arch, num_classes, arch_kwargs).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    # BatchNorm fills in num_batches_tracked for checkpoints saved before it existed (torchvision's V1 weights)
    missing = sorted(k for k in set(expected) - set(found) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(found) - set(expected))
    wrong_shape = [f"{k} {found[k]} != {expected[k]}" for k in sorted(set(found) & set(expected))
                   if found[k] != expected[k]]
    for what, items in [("missing keys", missing), ("unexpected keys", unexpected), ("shapes", wrong_shape)]:
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            raise ValueError(f"{path} does not fit {arch} with {num_classes} classes: {what} {items[:3]}{more}")
    return {k: v for k, v in ckpt.items() if k != "state_dict"}
