"""Shared fixtures: tiny image folders, a tiny trained-or-random model checkpoint, the finished tiny workflow run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from peekflow.models.checkpoint import save_checkpoint
from peekflow.models.registry import build_model

# one thread: tests stay fast when another torch process shares the two cores (see peekflow.device.set_threads)
torch.set_num_threads(1)

TINY_MODEL = {
    "name": "tiny",
    "arch": "small_resnet",
    "num_classes": 3,
    "arch_kwargs": {"widths": [4, 8, 8, 8]},
    "preprocessing": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
}


def write_folder(root, classes, per_class: int, size: int = 32, seed: int = 0):
    """Random images in <root>/<class>/<i>.png; class c has a brighter channel c so a model can learn it."""
    rng = np.random.default_rng(seed)
    for ci, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
            img[..., ci % 3] += 120
            Image.fromarray(img).save(root / cls / f"{i:03d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path):
    return write_folder(tmp_path / "images", ["a", "b", "c"], per_class=5)


@pytest.fixture
def tiny_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model("small_resnet", 3, widths=[4, 8, 8, 8])
    path = tmp_path / "model.pt"
    save_checkpoint(path, model.eval(), "small_resnet", ["a", "b", "c"], {"widths": [4, 8, 8, 8]})
    return path


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """A working directory where the whole workflow ran to completion on the tiny config (tests/workflow.py); run
    once per session and shared by the workflow and report tests, which only read it or dry-run on it."""
    from workflow import snakemake, tiny_config, write_config

    work = tmp_path_factory.mktemp("tiny")
    write_config(work, tiny_config())
    result = snakemake(work, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return work
