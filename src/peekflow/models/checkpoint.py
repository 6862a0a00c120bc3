"""Checkpoints: peekflow's own (architecture, classes and preprocessing travel with the weights) or a plain
state dict from elsewhere (e.g. torchvision's ResNet-50 file, a timm .safetensors or .pth file), always loaded from
a local path."""

from __future__ import annotations

import hashlib

from pathlib import Path

import torch
from torch import nn

from peekflow.io import atomic_path
from peekflow.models.fit import fit_problem
from peekflow.models.registry import build_model
from peekflow.models.timm_models import is_timm, timm_filtered

FORMAT = "peekflow-checkpoint-1"


def save_checkpoint(path, model: nn.Module, arch: str, classes: list[str], arch_kwargs: dict, **extra) -> None:
    payload = {
        "format": FORMAT,
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "num_classes": len(classes),
        "classes": list(classes),
        "state_dict": model.state_dict(),
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_file(path) -> dict:
    from safetensors.torch import load_file as load_safetensors

    return load_safetensors(str(path), device="cpu")


def read_checkpoint(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        obj = load_file(path) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu",
                                                                                weights_only=True)
    except Exception as err:  # torch raises several types for a bad file
        raise ValueError(f"checkpoint {path} cannot be loaded: {err}") from None
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        return obj
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"checkpoint {path} holds neither a peekflow checkpoint nor a state dict")
    # checkpoints saved from DataParallel / DDP wrap every key in "module."
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    return {"format": "state_dict", "state_dict": state}


def fitting_arch_kwargs(ckpt: dict, path, arch: str, num_classes: int, arch_kwargs: dict | None) -> dict | None:
    """A peekflow checkpoint must be of `arch` with `num_classes`, and its own arch_kwargs win; a plain state dict
    takes the config's."""
    if ckpt["format"] != FORMAT:
        return arch_kwargs
    if ckpt["arch"] != arch or ckpt["num_classes"] != num_classes:
        raise ValueError(
            f"checkpoint {path} holds {ckpt['arch']} with {ckpt['num_classes']} classes, "
            f"but the config asks for {arch} with {num_classes}"
        )
    return ckpt.get("arch_kwargs", arch_kwargs)


def fitting_state(ckpt: dict, arch: str, model: nn.Module) -> dict:
    """The checkpoint's tensors as `model` takes them (a timm model's plain state dict through its timm filter)."""
    if ckpt["format"] == FORMAT or not is_timm(arch):
        return ckpt["state_dict"]
    return timm_filtered(ckpt["state_dict"], model)


def load_model(path, arch: str, num_classes: int, arch_kwargs: dict | None = None,
               key: str = "models.<name>") -> tuple[nn.Module, dict]:
    """Build `arch` and load the weights at `path`; returns (model in eval mode, checkpoint metadata). A misfit names
    the difference in structure and the key under `key` (the model's config path, models.<name>) that changes it."""
    ckpt = read_checkpoint(path)
    arch_kwargs = fitting_arch_kwargs(ckpt, path, arch, num_classes, arch_kwargs)
    model = build_model(arch, num_classes, **(arch_kwargs or {}))
    state = fitting_state(ckpt, arch, model)
    problem = fit_problem({k: tuple(v.shape) for k, v in state.items()}, model, num_classes, key)
    if problem:
        raise ValueError(f"checkpoint {path} does not fit {arch} ({num_classes} classes): {problem}")
    model.load_state_dict(state, strict=False)  # strict but for num_batches_tracked (fit_problem)
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return model.eval(), meta


def weights_digest(model) -> str:
    """SHA-256 of a model's state dict (names and bytes): what a resumed job must share with the killed one."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
