"""A model as the config describes it: architecture, classes, preprocessing, layers; loaded from a checkpoint path."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from peekflow.data.folder import Preprocessing, class_folders
from peekflow.models.checkpoint import load_model
from peekflow.models.registry import build_model
from peekflow.models.timm_models import crop_note, is_timm, timm_preprocessing
from peekflow.models.tokens import set_token_pool

log = logging.getLogger("peekflow")


@dataclass
class ModelSpec:
    name: str
    arch: str
    num_classes: int
    arch_kwargs: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=dict)
    classes: list[str] | None = None  # class names in output-unit order ...
    classes_file: str | None = None  # ... or a text file, one per line ...
    classes_from_folder: str | None = None  # ... or the sorted sub-folders of an image folder (torchvision order)
    token_pool: str = "auto"  # pooled feature of token layers: cls | mean | auto (models/tokens.py)

    def preprocess(self) -> Preprocessing:
        """The config's preprocessing; for a timm model that gives none, timm's data config (logged at info level
        where it crops: `notes`)."""
        if self.preprocessing or not is_timm(self.arch):
            return Preprocessing(**self.preprocessing)
        prep = timm_preprocessing(build_model(self.arch, self.num_classes, **self.arch_kwargs))
        for note in self.notes(prep):
            log.info(note)
        return Preprocessing(**prep)

    def notes(self, derived: dict | None = None) -> list[str]:
        """What a reader of the results should know of how the model sees its images: the crop of timm's data
        config where the config gives no preprocessing (`derived`: that preprocessing, if computed already)."""
        if self.preprocessing or not is_timm(self.arch):
            return []
        from peekflow.summary import base

        derived = derived or timm_preprocessing(build_model(self.arch, self.num_classes, **self.arch_kwargs))
        note = crop_note(derived, f"models.{base(self.name)}")
        return [note] if note else []


def resolve_classes(spec: ModelSpec, meta: dict) -> list[str]:
    """Class names in output order: from the checkpoint if it carries them, else from the spec."""
    if meta.get("classes"):
        classes = list(meta["classes"])
    elif spec.classes:
        classes = list(spec.classes)
    elif spec.classes_file:
        path = Path(spec.classes_file)
        if not path.exists():
            raise FileNotFoundError(f"classes_file {path} of model {spec.name!r} does not exist")
        classes = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    elif spec.classes_from_folder:
        classes = class_folders(spec.classes_from_folder)
    else:
        raise ValueError(
            f"model {spec.name!r}: its checkpoint names no classes; set classes, classes_file or "
            f"classes_from_folder in its config"
        )
    if len(classes) != spec.num_classes:
        raise ValueError(f"model {spec.name!r} has num_classes {spec.num_classes} but {len(classes)} class names")
    return classes


def load_spec(spec: ModelSpec, checkpoint) -> tuple[nn.Module, list[str]]:
    from peekflow.summary import base

    model, meta = load_model(checkpoint, spec.arch, spec.num_classes, spec.arch_kwargs, f"models.{base(spec.name)}")
    return set_token_pool(model, spec.token_pool), resolve_classes(spec, meta)
