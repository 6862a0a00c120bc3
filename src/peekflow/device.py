"""Device choice: `auto` is CUDA when present, else CPU; anything else is passed to torch.device."""

from __future__ import annotations

import os
import sys


def resolve_device(name: str = "auto"):
    """The torch.device `name` names (torch imported here only: set_threads must not load it).

    On CUDA, float32 stays float32: PyTorch's default runs convolutions in TF32 (10-bit mantissa), which on an H200
    moved a ResNet-50's logits by 6e-3 relative to the CPU's and flipped 2.8% of its argmax; without it they agreed
    to 7e-6 (benchmarks/gpu_check.py). Speed comes from the explicit `amp` settings instead."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} was requested but CUDA is not available (use device: auto or cpu)")
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return device


def no_gpu_possible() -> bool:
    """True where torch can see no GPU: neither NVIDIA's driver library (CUDA) nor AMD's HIP runtime (ROCm builds of
    torch also answer torch.cuda) can be loaded. A job that only needs to know decides so without importing torch,
    which costs seconds of every job's start."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "libamdhip64.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return False
    return True


def torch_threads() -> int:
    """The CPU threads torch uses or will use in this process: torch's own count where it is imported, else
    OMP_NUM_THREADS (set_threads), else torch's default (importing it)."""
    if "torch" not in sys.modules and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    import torch

    return torch.get_num_threads()


def set_threads(threads: int | None) -> None:
    """Limit intra-op threads to what the scheduler granted this job (Snakemake's `threads`).

    Oversubscribed OpenMP threads spin against each other: on a 2-core machine two 2-thread torch jobs side by side
    ran ~100x slower than two 1-thread jobs. Hence one thread per job by default, and never more than the cores."""
    if threads:
        n = max(1, min(int(threads), os.cpu_count() or 1))
        os.environ["OMP_NUM_THREADS"] = str(n)  # read by torch, faiss and numpy's BLAS when they are first imported
        if "torch" in sys.modules:  # already imported: set it directly
            sys.modules["torch"].set_num_threads(n)
