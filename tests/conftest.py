"""Shared fixtures: tiny image folders, a tiny trained-or-random model checkpoint, the finished tiny workflow run; and
how the tests share the machine's cores (pytest-xdist, `-n auto --dist loadgroup` in pyproject.toml)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from peekflow.models.checkpoint import save_checkpoint
from peekflow.models.registry import build_model

# one thread: tests stay fast when another torch process shares the two cores (see peekflow.device.set_threads)
torch.set_num_threads(1)

# Work units run longest first, so that no long run starts last on one core while the other core idles: the group
# of each costly shared run (a module- or session-scoped fixture), by its measured cost (`--durations`), then the rest.
LONGEST_FIRST = ["test_imagenet_workflow", "test_default_workflow", "test_slurm", "finished_run", "test_replicas",
                 "test_examples", "test_atlas"]


def xdist_group(item) -> str | None:
    """The work unit an item must share with others: the name of the session-scoped fixture it uses (the tiny run),
    else its module's name if it uses a module-scoped fixture (a run or a started service built once per module).
    Tests of one group run one after the other on one worker, so a shared run is built once and never by two workers
    at the same time, and a run's folder or a service (the single-node Slurm, Chromium) is never used concurrently."""
    info = getattr(item, "_fixtureinfo", None)
    scopes = {} if info is None else {name: defs[-1].scope for name, defs in info.name2fixturedefs.items() if defs}
    session = sorted(name for name, scope in scopes.items() if scope == "session" and name in FIXTURES)
    if session:
        return session[0]
    if "module" in scopes.values():
        return item.module.__name__
    return None


FIXTURES = {"finished_run"}  # the session-scoped fixtures that are costly runs (others, e.g. tmp_path_factory, aren't)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    order = {name: i for i, name in enumerate(LONGEST_FIRST)}
    groups = {}
    for item in items:
        groups[item.nodeid] = group = xdist_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: order.get(groups[item.nodeid] or item.module.__name__, len(order)))  # stable


@pytest.hookimpl(trylast=True)  # after xdist's hook, which gives a grouped item's node id its @group suffix
def pytest_collection_finish(session):
    if hasattr(session.config, "workerinput") and session.config.getvalue("loadgroup"):
        lost = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group") and
                "@" not in item.nodeid]
        if lost:  # xdist 3.8 renames items in a way pytest 9.2 ignores (pytest-xdist issue #1386)
            raise pytest.UsageError(f"pytest-xdist did not group {lost[0]} and {len(lost) - 1} more: shared runs "
                                    "would be built on every worker at once; use a pytest that it supports")

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
