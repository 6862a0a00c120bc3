"""Build a classifier by name: peekflow's built-ins, any torchvision classification model or any timm model.

`build_model("small_resnet", 10)`, `build_model("resnet50", 1000)`, `build_model("timm/vit_small_patch16_224", 10)`;
weights are never downloaded: they come from a checkpoint path (see checkpoint.py).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from peekflow.models.small import SmallResNet, SmallVGG
from peekflow.models.timm_models import build_timm, is_timm

_BUILTINS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn):
        if name in _BUILTINS:
            raise ValueError(f"model {name!r} registered twice")
        _BUILTINS[name] = fn
        return fn

    return deco


register("small_resnet")(SmallResNet)
register("small_vgg")(SmallVGG)


def torchvision_classifiers() -> list[str]:
    import torchvision  # imported only when needed: it costs seconds at start-up

    return sorted(torchvision.models.list_models(module=torchvision.models))


def available_models() -> list[str]:
    return sorted(_BUILTINS) + torchvision_classifiers()


def build_model(arch: str, num_classes: int, **kwargs) -> nn.Module:
    if is_timm(arch):
        return build_timm(arch, num_classes, **kwargs)
    if arch in _BUILTINS:
        return _BUILTINS[arch](num_classes=num_classes, **kwargs)
    if arch in torchvision_classifiers():
        import torchvision

        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    raise ValueError(
        f"unknown model architecture {arch!r}; built-ins: {sorted(_BUILTINS)}; "
        f"or any torchvision classifier, e.g. resnet18, resnet50, vgg16_bn, vit_b_16; "
        f"or timm/<name> for any timm model"
    )
