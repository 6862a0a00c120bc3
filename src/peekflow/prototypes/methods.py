"""The registry of prototype methods: each is registered once, and every other part of peekflow asks it.

A method's entry names it (the config's `prototypes.methods.<name>`, the file results/prototypes/<model>/<name>.h5),
the `peekflow` sub-command that makes it, its settings class, and whether its prototypes make a data-free OOD bank
(then every detector registered with banks gets a `<detector>_<name>` variant fitted on them, e.g. knn_deepinversion:
peekflow.ood.base). The config schema and its checks, the checks before any job, the rules and their resource
requests read the same entries, so a method registered here is known to all of them.

Naming the methods imports no torch (the OOD registry asks for the banks): a settings class or function is given as
"module:name" and imported on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class PrototypeMethod:
    name: str  # config key and file name
    command: str  # `peekflow <command>` makes the prototype file
    settings: str | type  # its settings class, or "module:Class"
    targets: str  # "module:function": (settings, number of classes) -> the class of every prototype
    summary: str  # what it makes, one line (the config schema's description of its block)
    title: str  # its name in prose: "DeepDream"
    bank: bool = False  # its prototypes make a data-free OOD bank (`<detector>_<name>`)
    references: bool = False  # draws real reference images from a data set (`prototypes.methods.<name>.dataset`)
    batch_norm: str | None = None  # the setting that, unless 0, matches the model's batch-norm statistics

    def settings_class(self) -> type:
        return _load(self.settings) if isinstance(self.settings, str) else self.settings

    def parse(self, block: dict | None):
        """Its settings object from its config block (less the workflow's own keys: the reference data set)."""
        return self.settings_class()(**{k: v for k, v in (block or {}).items() if k not in self.workflow_keys})

    def target_classes(self, settings, num_classes: int) -> list[int]:
        return _load(self.targets)(settings, num_classes)

    @property
    def workflow_keys(self) -> tuple[str, ...]:
        """Keys of its config block that the workflow reads itself (not settings of its command)."""
        return ("dataset",) if self.references else ()


_METHODS: dict[str, PrototypeMethod] = {}


def _load(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def register(method: PrototypeMethod) -> PrototypeMethod:
    """Make `method` known to the workflow (its name once)."""
    if _METHODS.get(method.name, method) != method:
        raise ValueError(f"prototype method {method.name!r} registered twice")
    _METHODS[method.name] = method
    return method


def methods() -> dict[str, PrototypeMethod]:
    """Name -> entry of every registered prototype method, in the order of registration."""
    return dict(_METHODS)


def method(name: str) -> PrototypeMethod:
    if name not in _METHODS:
        raise ValueError(f"unknown prototype method {name!r}; valid: {sorted(_METHODS)}")
    return _METHODS[name]


def banks() -> dict[str, str]:
    """Method -> its title, of the methods whose prototypes make a data-free OOD bank."""
    return {m.name: m.title for m in _METHODS.values() if m.bank}


register(PrototypeMethod("deepdream", "dream", "peekflow.prototypes.deepdream:DreamSettings",
                         "peekflow.prototypes.deepdream:dream_targets", "PEEK's DeepDream prototypes", "DeepDream",
                         bank=True))
register(PrototypeMethod("deepinversion", "deepinversion", "peekflow.prototypes.deepinversion:InversionSettings",
                         "peekflow.prototypes.deepinversion:inversion_targets", "DeepInversion prototypes",
                         "DeepInversion", bank=True, batch_norm="r_feature"))
register(PrototypeMethod("caricature", "caricature", "peekflow.prototypes.caricature:CaricatureSettings",
                         "peekflow.prototypes.caricature:reference_targets", "caricatures of real images", "Caricature",
                         references=True))
