"""Emergence outputs: one HDF5 file per layer, and the knowledge-point counts per layer (CSV + JSON).

<layer>.h5: rows, paths, labels, probs [N, Y]; sample_map [d, C] (M), sample_scale (c, attribute),
sample_embedding [N, d], class_means [Y, d], class_prior [Y]; region_weights [N, R], channel_weights [N, C];
regional_map [d, C] (Lambda), regional_scale (attribute), regional_embedding [N, R, d]; knowledge_points [N, R] bool,
knowledge_class [N, R], knowledge_probability [N, R]; sample_history, importance_history, regional_history; the
settings (JSON) and complete=True last.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import h5py
import numpy as np
import torch

from peekflow.emergence.mixture import ClassMixture
from peekflow.io import atomic_path, open_complete_h5, write_json, write_text

COUNT_COLUMNS = ["layer", "regions", "knowledge_points", "toward_label", "share", "sample_kl", "sample_accuracy"]


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def write_layer(path, result, samples, settings: dict, attrs: dict) -> None:
    emb = result.sample.embed(result.features)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        data = {
            "rows": samples.rows, "labels": samples.labels, "probs": samples.probs,
            "sample_map": result.sample.weight, "sample_embedding": emb,
            "class_means": result.sample.mixture.means, "class_prior": result.sample.mixture.prior,
            "region_weights": result.importance.regions, "channel_weights": result.importance.channels,
            "regional_map": result.regional.weight, "regional_embedding": result.region_emb,
            "knowledge_points": result.knowledge.mask, "knowledge_class": result.knowledge.classes,
            "knowledge_probability": result.knowledge.probability,
            "sample_history": result.sample.history, "importance_history": result.importance.history,
            "regional_history": result.regional.history,
        }
        for name, value in data.items():
            h5.create_dataset(name, data=_np(value))
        h5.create_dataset("paths", data=samples.paths, dtype=h5py.string_dtype("utf-8"))
        h5.attrs.update({**attrs, "layer": result.layer, "sample_scale": result.sample.scale,
                         "regional_scale": result.regional.scale, "classes": json.dumps(samples.classes),
                         "settings": json.dumps(settings, sort_keys=True)})
        h5.attrs["complete"] = True


TRAJECTORY_ARRAYS = ("picks", "rows", "labels", "logits", "sample", "regions", "kp_mask", "kp_class", "toward_true",
                     "toward_other", "true_prob", "adversarial")


def write_trajectory(path, trace: dict, layers: list[str], classes: list[str], model: str, settings: str) -> None:
    """The adversarial trajectory (emergence.trajectory.adversarial_trajectory's dict), atomically; `settings`:
    its settings as JSON."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for key in TRAJECTORY_ARRAYS:
            h5.create_dataset(key, data=trace[key])
        h5.create_dataset("paths", data=trace["paths"], dtype=h5py.string_dtype("utf-8"))
        h5.attrs.update({"layers": json.dumps(layers), "classes": json.dumps(classes), "model": model,
                         "settings": settings})
        h5.attrs["complete"] = True


@dataclass
class LayerFile:
    """What the trajectory stage needs of a layer's analysis."""

    layer: str
    rows: np.ndarray
    paths: list[str]
    labels: np.ndarray
    sample_map: torch.Tensor
    sample_scale: float
    mixture: ClassMixture
    regional_map: torch.Tensor
    regional_scale: float
    region_weights: torch.Tensor
    classes: list[str]
    settings: dict

    def embed_sample(self, features: torch.Tensor) -> torch.Tensor:
        return features @ self.sample_map.T / self.sample_scale

    def embed_regions(self, regional: torch.Tensor) -> torch.Tensor:
        return torch.einsum("dk,nkr->nrd", self.regional_map, regional) / self.regional_scale


def read_layer(path) -> LayerFile:
    with open_complete_h5(path, "emergence file", "rerun peekflow emergence") as h5:
        t = {k: torch.from_numpy(h5[k][:]) for k in ("sample_map", "class_means", "class_prior", "regional_map",
                                                     "region_weights")}
        return LayerFile(
            layer=h5.attrs["layer"], rows=h5["rows"][:], labels=h5["labels"][:],
            paths=[p.decode() if isinstance(p, bytes) else p for p in h5["paths"][:]],
            sample_map=t["sample_map"], sample_scale=float(h5.attrs["sample_scale"]),
            mixture=ClassMixture(t["class_means"], t["class_prior"]), regional_map=t["regional_map"],
            regional_scale=float(h5.attrs["regional_scale"]), region_weights=t["region_weights"],
            classes=json.loads(h5.attrs["classes"]), settings=json.loads(h5.attrs["settings"]),
        )


def count_row(result, samples) -> dict:
    emb = result.sample.embed(result.features)
    labels = samples.labels.to(emb.device)
    accuracy = (result.sample.mixture.log_posterior(emb).argmax(1) == labels).float().mean().item()
    regions = result.knowledge.mask.numel()
    return {"layer": result.layer, "regions": regions, "knowledge_points": result.knowledge.count(),
            "toward_label": result.knowledge.count_of(labels), "share": result.knowledge.count() / regions,
            "sample_kl": result.sample.history[-1], "sample_accuracy": accuracy}


def write_counts(csv_path, json_path, rows: list[dict], extra: dict) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, COUNT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(csv_path, buffer.getvalue())
    write_json(json_path, {**extra, "layers": rows})
