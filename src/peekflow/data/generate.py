"""The embedded default data sets: rendered shapes (ID and near OOD), full-frame textures (far OOD), noise (farthest).

Layout: `<out>/<split>/<class>/<00000>.png` plus `<out>/attributes.csv` (path relative to <out>, split, class and
concept columns), written last and atomically: its presence marks a complete set. For textures and noise the class
folder is the pattern or noise type, never an ID class.

Every image draws from its own generator seeded by (seed, kind, split, class, index), so an image does not depend on
iteration order, worker count or the other classes requested; the same settings give byte-identical files.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from peekflow.data.noise import NOISE_TYPES, noise_image
from peekflow.data.scenes import shape_image
from peekflow.data.shapes import check_shape_names
from peekflow.data.textures import TEXTURE_PATTERNS, texture_image
from peekflow.io import atomic_path
from peekflow.progress import progress
from peekflow.settings import required, setting

log = logging.getLogger("peekflow")

KINDS = ("shapes", "textures", "noise")
ATTRIBUTES = "attributes.csv"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RENDER = {"shapes": shape_image, "textures": texture_image, "noise": noise_image}


@dataclass
class GenerateSettings:  # checked by validate(), per kind
    seed: int = required("seed of every image's generator", minimum=0)
    splits: dict[str, int] = required("images per class (shapes) or in total (textures, noise), per split name")
    image_size: int = setting(64, "image side, pixels", minimum=16, maximum=1024)
    classes: list[str] | None = setting(None, "shape names (kind shapes only)")


def validate(kind: str, s: GenerateSettings) -> list[str]:
    """Check settings for `kind`; return the class folders (shape names, patterns or noise types)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if not isinstance(s.seed, int) or isinstance(s.seed, bool) or s.seed < 0:
        raise ValueError(f"settings.seed must be a non-negative integer, got {s.seed!r}")
    if not isinstance(s.image_size, int) or not 16 <= s.image_size <= 1024:
        raise ValueError(f"settings.image_size must be an integer in [16, 1024], got {s.image_size!r}")
    if not isinstance(s.splits, dict) or not s.splits:
        raise ValueError(f"settings.splits must be a non-empty object split -> count, got {s.splits!r}")
    for name, count in s.splits.items():
        if not _SPLIT_NAME.match(name):
            raise ValueError(f"settings.splits: bad split name {name!r} (letters, digits, _ . - only)")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 99999:
            raise ValueError(f"settings.splits[{name!r}] must be an integer in [1, 99999], got {count!r}")
    if kind != "shapes":
        if s.classes is not None:
            raise ValueError(f"settings.classes is only for kind=shapes; kind={kind} uses fixed class folders")
        return list(TEXTURE_PATTERNS if kind == "textures" else NOISE_TYPES)
    if not s.classes or not isinstance(s.classes, list):
        raise ValueError("settings.classes (a list of shape names) is required for kind=shapes")
    check_shape_names(s.classes)
    dupes = sorted({c for c in s.classes if s.classes.count(c) > 1})
    if dupes:
        raise ValueError(f"settings.classes lists {dupes} more than once")
    return list(s.classes)


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


def plan(kind: str, s: GenerateSettings, classes: list[str]) -> list[tuple[str, str, int, tuple[int, ...]]]:
    """(split, class, index, seed entropy) per image, in csv order."""
    jobs = []
    for split, count in s.splits.items():
        if kind == "shapes":
            pairs = [(c, i) for c in classes for i in range(count)]
        else:  # a total count, class folders taken in turn so the types stay balanced
            pairs = [(classes[i % len(classes)], i) for i in range(count)]
        jobs += [(split, c, i, (s.seed, _crc(kind), _crc(split), _crc(c), i)) for c, i in pairs]
    return jobs


def _make(task) -> dict:
    kind, size, out, (split, cls, index, entropy) = task
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    pixels, attrs = _RENDER[kind](cls, size, rng)
    rel = f"{split}/{cls}/{index:05d}.png"
    Image.fromarray(pixels, "RGB").save(Path(out) / rel, format="PNG")
    return {"path": rel, "split": split, "class": cls, **attrs}


def clear_previous(out: Path) -> None:
    """Remove an earlier generation (attributes.csv first, then split folders); refuse to delete anything else."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")

    def ours(p: Path) -> bool:  # <split>/<class>/*.png and attributes.csv; hidden entries are left alone
        parts = p.relative_to(out).parts
        if parts[0].startswith("."):
            return True
        depth = len(parts)
        if depth == 1:
            return p.is_dir() or p.name == ATTRIBUTES
        return p.is_dir() if depth == 2 else depth == 3 and p.is_file() and p.suffix == ".png"

    strays = [p for p in sorted(out.rglob("*")) if not ours(p)]
    if strays:
        raise ValueError(f"output {out} holds files that are not part of a generated data set, e.g. {strays[0]}; "
                         "refusing to delete them")
    (out / ATTRIBUTES).unlink(missing_ok=True)
    for d in sorted(out.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            shutil.rmtree(d)


def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def generate_dataset(out, kind: str, settings: GenerateSettings, workers: int | None = None) -> pd.DataFrame:
    """Generate data set `kind` into `out` (see module doc); returns the attributes table (also attributes.csv).
    `workers` (processes) changes speed only, never the output."""
    out = Path(out)
    classes = validate(kind, settings)
    jobs = plan(kind, settings, classes)
    clear_previous(out)
    for split, cls in dict.fromkeys((j[0], j[1]) for j in jobs):
        (out / split / cls).mkdir(parents=True, exist_ok=True)
    workers = default_workers() if workers is None else max(1, workers)
    log.info("generating %d %s images (%dpx) into %s with %d worker(s)",
             len(jobs), kind, settings.image_size, out, workers)
    tasks = [(kind, settings.image_size, str(out), job) for job in jobs]
    desc = f"generate {out.name}"
    if workers == 1:
        rows = [_make(t) for t in progress(tasks, len(tasks), desc)]
    else:
        with ProcessPoolExecutor(workers) as pool:
            chunk = max(1, min(256, len(tasks) // (8 * workers)))
            rows = list(progress(pool.map(_make, tasks, chunksize=chunk), len(tasks), desc))
    table = pd.DataFrame(rows)
    with atomic_path(out / ATTRIBUTES) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    return table
