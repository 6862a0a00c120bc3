"""Device choice: `auto` is CUDA when present, else CPU; anything else is passed to torch.device."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was requested but CUDA is not available (use device: auto or cpu)")
    return device


def set_threads(threads: int | None) -> None:
    """Limit intra-op threads to what the scheduler granted this job (Snakemake's `threads`).

    Oversubscribed OpenMP threads spin against each other: on a 2-core machine two 2-thread torch jobs side by side
    ran ~100x slower than two 1-thread jobs. Hence one thread per job by default, and never more than the cores."""
    if threads:
        torch.set_num_threads(max(1, min(int(threads), os.cpu_count() or 1)))
