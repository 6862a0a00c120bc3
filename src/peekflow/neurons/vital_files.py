"""VITAL's inputs and outputs: the reference images of the selected channels, and vital.h5 with its grid.

vital.h5: `channels` [S]; `plain`, `vital` [S,3,H,W] uint8 (render size); `references` [S,k,3,H,W] uint8 (resized
to the render size); `activation/{plain,vital,reference}` [S] (spatial mean of the channel; references: their mean);
`similarity/{plain,vital,reference}` [S] with a probe (cosine to the references' mean probe feature; references:
leave-one-out); `cpu_seconds/{plain,vital}` [S]; attributes layer, model, settings, match_layers, probe (JSON
where not plain), `complete=True` last. The grid: one row per channel (the first GRID_CHANNELS), plain | VITAL | up to
`GRID_REFS` references; the atlas shows every channel.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from peekflow.figures import save_grid
from peekflow.io import atomic_path, open_complete_h5, plain_attrs
from peekflow.neurons.patch_files import read_patches
from peekflow.neurons.patches import select_channels

GRID_REFS = 6
GRID_CHANNELS = 32  # rows of the grid (the first channels): a report figure stays small; every channel is in the atlas


def reference_images(patches_folder, topn_file, settings) -> tuple[str, np.ndarray, np.ndarray]:
    """(layer, channels [S], references [S,k,3,P,P] uint8) for settings.channels, from the layer's patch folder
    (reference: patches) or its top-N images (reference: images; needs the top-N file)."""
    patches, attrs = read_patches(patches_folder)
    layer = attrs["layer"]
    have = [int(c) for c in patches.channels]
    topn = None
    if topn_file is not None:
        from peekflow.neurons.topn import read_topn

        topn = read_topn(topn_file)
    n = topn.indices.shape[0] if topn is not None else 1 << 30  # without the top-N file: no range to check
    chosen = np.asarray(have) if settings.channels == "all" else select_channels(settings.channels, n, layer)
    missing = sorted(set(chosen.tolist()) - set(have))
    if missing:
        raise ValueError(f"VITAL: channel(s) {missing[:10]} of layer {layer!r} have no patches in {patches_folder} "
                         f"(it holds {len(have)} channels: {have[:10]}...); add them to neurons.patches.channels")
    rows = [have.index(int(c)) for c in chosen]
    if settings.reference == "patches":
        return layer, chosen, patches.pixels[rows, :settings.references]
    if topn is None:
        raise ValueError("VITAL: reference: images needs the layer's top-N file (--topn)")
    from peekflow.data.folder import Preprocessing
    from peekflow.neurons.patches import load_images

    preprocessing = Preprocessing(**json.loads(topn.attrs["preprocessing"]))
    refs = [np.stack([np.rint(img.numpy() * 255).astype(np.uint8)
                      for img in load_images(topn.paths[c][:settings.references], preprocessing)]) for c in chosen]
    return layer, chosen, np.stack(refs)


def _uint8(images: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(images, 0, 1) * 255).astype(np.uint8)


def write_vital(out, grid, result, attrs: dict) -> None:
    from dataclasses import asdict, is_dataclass

    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        h5["channels"] = result.channels
        for name in ("plain", "vital"):
            h5.create_dataset(name, data=_uint8(getattr(result, name)), compression="gzip", compression_opts=4)
        h5.create_dataset("references", data=_uint8(result.references), compression="gzip", compression_opts=4)
        for group in ("activation", "similarity"):
            for kind, values in getattr(result, group).items():
                h5[f"{group}/{kind}"] = np.asarray(values, np.float32)
        for kind, values in result.seconds.items():
            h5[f"cpu_seconds/{kind}"] = np.asarray(values, np.float64)
        for key, value in attrs.items():
            value = asdict(value) if is_dataclass(value) else value
            h5.attrs[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
        h5.attrs["complete"] = True
    if grid:
        save_vital_grid(grid, result)


def save_vital_grid(path, result) -> None:
    refs = result.references[:GRID_CHANNELS, :GRID_REFS]
    cells, labels = [], []
    for s, c in enumerate(result.channels[:GRID_CHANNELS]):
        cells += [result.plain[s], result.vital[s], *refs[s]]
        labels += [f"c{c} plain", "VITAL", *[f"patch {j + 1}" for j in range(len(refs[s]))]]
    side = result.plain.shape[-1]
    save_grid(path, np.stack(cells), ncol=2 + refs.shape[1], labels=labels, scale=2 if side <= 96 else 1)


def read_vital(path) -> tuple[dict, dict]:
    """({dataset path: array}, attributes) of a vital.h5."""
    with open_complete_h5(path, "VITAL file", "rerun `peekflow vital`") as h5:
        data = {}
        h5.visititems(lambda name, obj: data.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        attrs = plain_attrs(h5, skip=("complete",))
    return data, attrs


def summary_rows(paths: list) -> list[dict]:
    """One row per vital.h5: the layer and the channel means of its measurements (docs/results.md's table)."""
    rows = []
    for path in paths:
        data, attrs = read_vital(path)
        row = {"file": str(Path(path)), "layer": attrs["layer"], "channels": len(data["channels"])}
        for key, values in sorted(data.items()):
            if key.startswith(("activation/", "similarity/", "cpu_seconds/")):
                row[key] = float(np.mean(values))
        rows.append(row)
    return rows
