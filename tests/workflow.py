"""Run the real workflow (Snakemake in a subprocess) in a temporary directory on a given config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny_config.yaml"


def snakemake_exe() -> str:
    exe = Path(sys.executable).with_name("snakemake")
    return str(exe) if exe.exists() else shutil.which("snakemake")


def snakemake(workdir: Path, *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [snakemake_exe(), "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(config or workdir / "config.yaml"), *args]
    # the rules call `peekflow`: put this interpreter's scripts first on PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def write_config(workdir: Path, config: dict, name: str = "config.yaml") -> Path:
    path = workdir / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def wordnet_missing() -> str:
    """Why WordNet cannot be found here ("" where it can): the semantics stages need it."""
    from peekflow.semantics.wordnet import WordNetMissing, find_wordnet

    try:
        find_wordnet()
    except (WordNetMissing, ImportError) as err:
        return str(err)
    return ""


def tiny_config() -> dict:
    """The tiny config; without its semantics block where WordNet is not installed (the semantics tests skip)."""
    config = yaml.safe_load(TINY.read_text())
    if wordnet_missing():
        config.pop("semantics")
    return config


def imagenet_wnids(n: int = 1000) -> list[str]:
    """The first n of ImageNet-1k's 1,000 wnids (timm's list, sorted): real WordNet 3.0 noun offsets."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())[:n]


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run (on stdout) or a real run (on stderr)."""
    lines = result.stdout.splitlines()
    if "Job stats:" not in lines:
        lines = result.stderr.splitlines()
    if "Job stats:" not in lines:
        return {}
    jobs = {}
    for line in lines[lines.index("Job stats:") + 3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        if parts[0] != "all":  # the target pseudo-rule
            jobs[parts[0]] = int(parts[1])
    return jobs


def planned_outputs(result: subprocess.CompletedProcess) -> dict[str, list[str]]:
    """Rule -> the outputs of its planned jobs, from a dry run's job listing."""
    outputs: dict[str, list[str]] = {}
    rule = None
    for line in result.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            rule = line.split()[1][:-1]
        elif rule and line.startswith("    output: "):
            outputs.setdefault(rule, []).extend(line.removeprefix("    output: ").split(", "))
    return outputs


def fake_user_inputs(workdir: Path, config: dict, folders: dict[str, dict[str, int]] | None = None,
                     seed: int | None = None) -> None:
    """Stand-ins for a config's own data and weights. Without `seed`, what passes the checks before any job
    (workflow/rules/preflight.smk) and a dry run without real files: one empty image per folder (num_classes class
    folders where a model takes its class names from a folder, named by ImageNet's first wnids, which the semantics
    checks map to WordNet) and checkpoints of the right tensor shapes whose every
    tensor shares one zero. With `seed`, what a real run reads: seeded random JPEGs (`random_image`) and the seeded
    random initialisation of each model's architecture, saved as a plain state dict (as torchvision's are).
    `folders` (a data set's path -> its class folder -> number of images) replaces the layout of those data sets, and
    adds the folders it names that no data set of `config` has (e.g. one that an overlay config points a data set at)."""
    import torch

    from peekflow.models.registry import build_model

    class_counts = {m["classes_from_folder"]: m["num_classes"] for m in config["models"].values()
                    if "classes_from_folder" in m}
    paths = [spec["path"] for spec in config["datasets"].values() if "path" in spec]
    write_images(workdir, {path: (folders or {}).get(path) or (dict.fromkeys(imagenet_wnids(class_counts[path]), 1)
                                                               if path in class_counts else {"class0000": 1})
                           for path in dict.fromkeys([*paths, *(folders or {})])}, seed)
    for m in config["models"].values():
        if "checkpoint" in m:
            if seed is not None:
                torch.manual_seed(seed)
            state = build_model(m["arch"], m["num_classes"], **m.get("arch_kwargs", {})).state_dict()
            if seed is None:
                state = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in state.items()}
            (workdir / m["checkpoint"]).parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, workdir / m["checkpoint"])


def write_images(workdir: Path, folders: dict[str, dict[str, int]], seed: int | None = None) -> None:
    """Image files under `workdir`: data set path -> class folder -> count. Without `seed`, empty .jpg files (what a
    dry run needs); with it, seeded random JPEGs (`random_image`)."""
    rng = np.random.default_rng(seed)
    for path, layout in folders.items():
        for folder, count in layout.items():
            (workdir / path / folder).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                if seed is None:
                    (workdir / path / folder / f"image{i}.jpg").write_bytes(b"")
                else:
                    random_image(rng).save(workdir / path / folder / f"{folder}_{i}.JPEG", quality=85)


def random_image(rng: np.random.Generator):
    """A JPEG-friendly random picture: smooth colour blobs plus grain, each side 180-500 px (any aspect ratio), in
    RGB, greyscale (L) or CMYK mode -- the modes JPEG photo collections hold."""
    from PIL import Image

    w, h = rng.integers(180, 501, size=2)
    blobs = Image.fromarray(rng.integers(0, 256, (rng.integers(2, 9), rng.integers(2, 9), 3), dtype=np.uint8))
    pixels = np.asarray(blobs.resize((int(w), int(h)), Image.BICUBIC), dtype=np.int16)
    pixels = np.clip(pixels + rng.integers(-20, 21, pixels.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    return img.convert(str(rng.choice(["RGB", "RGB", "L", "CMYK"])))
