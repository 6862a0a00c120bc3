"""OOD detector interface and the registry that builds detectors by name.

Convention, for every method: `score` returns float64, one value per sample, and a higher score means
"more in-distribution" (ID). Detectors see only numpy arrays held in a `FeatureSet` (logits, one layer's pooled
features, labels, paths): features are extracted once and reused by every detector; no model, no device. The one
exception declares `needs_images = True` (ODIN perturbs its inputs): it scores image folders with the model through
`score_images` instead, and writes the same score file (peekflow.ood.scoring). A `needs_model` method scores stores
but derives its fit from the model's weights (`fit_model`) instead of a bank (bn_gaussian).

A detector module defines a class beside `@register("name")`; `build(name, settings)` constructs it from keyword
settings (the keyword arguments of its `__init__`) and rejects unknown names and unknown keys by name. Every module
of the `peekflow.ood` package is imported on first use of the registry, so a new file registers itself. A class
registered `@register_with_banks("name")` also gets a variant `name_<bank>` for every prototype method whose prototypes
make a data-free bank (peekflow.prototypes.methods), those registered later included.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from typing import ClassVar

import numpy as np

from peekflow.features.store import FeatureSet
from peekflow.prototypes.methods import banks

_REGISTRY: dict[str, type["Detector"]] = {}
_BANKED: dict[str, tuple[type["Detector"], str]] = {}  # registered with banks: name -> (class, variant docstring)
# the precision statement of the methods computed in float64 throughout (checked by tests/test_ood_precision_*.py)
FLOAT64 = "float64: relative error <= 1e-9 against exact arithmetic on the stored inputs"
_NOT_DETECTORS = {"base", "catalogue", "metrics", "neighbours", "papers", "plots", "posthoc", "scoring", "table"}


class Detector:
    """Base class: `fit(train)` (default no-op) then `score(data)` -> float64 [N], higher = more ID."""

    name: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = False  # needs a store to fit on (the ID training store, or a prototype bank)
    uses_features: ClassVar[bool] = False  # needs the penultimate `features/<layer>`, not only logits
    needs_last_layer: ClassVar[bool] = False  # needs the classifier's last layer W, b recorded in the stores
    needs_images: ClassVar[bool] = False  # runs the model on image folders (score_images), not on stores
    needs_model: ClassVar[bool] = False  # reads the model's weights (fit_model(model, layer)), scores feature stores
    gpu_helps: ClassVar[bool] = False  # a GPU in its job speeds it up (the SLURM profile asks one for score_ood)
    pairwise: ClassVar[bool] = False  # compares every scored row with every bank row (its job's cost: fit x eval)
    prototype_bank: ClassVar[str | None] = None  # fits on the features of these prototypes, not the ID train store
    settings_help: ClassVar[dict[str, str]] = {}  # keyword setting -> one-line help with its unit (config schema)
    sweeps: ClassVar[tuple[str, ...]] = ()  # settings a config may give as a list: one run (table row) per value
    precision: ClassVar[str] = ""  # what its scores guarantee against exact arithmetic on the stored inputs (tested)

    def fit(self, train: FeatureSet) -> "Detector":
        return self

    def score(self, data: FeatureSet) -> np.ndarray:
        raise NotImplementedError

    def fit_size_problem(self, rows: int, class_rows: dict | None, dims: int) -> str | None:
        """Why fitting on a store of `rows` rows of `dims` feature dimensions (`class_rows`: label -> rows, where
        known) would leave the scores undetermined (the sentence after "the fit store has ..."), or None. The checks
        before any job ask it wherever the config tells the sizes (prototype banks, generated data sets)."""
        return None

    def fit_model(self, model, layer: str) -> "Detector":
        """What a `needs_model` method derives from the model itself (its weights), in place of `fit`."""
        raise NotImplementedError(f"OOD method {self.name!r} does not read the model")

    def score_images(self, model, root, preprocessing, device) -> np.ndarray:
        """Scores of the images under `root` (sorted as in a feature store); only for `needs_images` methods."""
        raise NotImplementedError(f"OOD method {self.name!r} scores feature stores, not image folders")

    def settings(self) -> dict:
        """The effective keyword settings (defaults filled in), as stored in score files."""
        return {key: getattr(self, key) for key in _setting_names(type(self))}


def register(name: str):
    """Class decorator: make a Detector subclass buildable as `name`."""

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise TypeError(f"@register({name!r}) expects a Detector subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            first = _REGISTRY[name].__qualname__
            raise ValueError(f"OOD method {name!r} registered twice ({first}, {cls.__qualname__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def register_with_banks(name: str, doc: str = "{name} fitted on a data-free bank: the features of the target's "
                                                "{title} prototypes."):
    """Class decorator: register `name` (fitted on the ID training store) and, for every prototype method B whose
    prototypes make a bank (peekflow.prototypes.methods.banks), `name_B`: the same method fitted on the features of
    the target's B prototypes (data-free), documented by `doc`."""

    def decorate(cls):
        register(name)(cls)
        _BANKED[name] = (cls, doc)
        return cls

    return decorate


def _bank_variants() -> None:
    """Register the variant of every method registered with banks on every bank that has none yet."""
    for name, (cls, doc) in list(_BANKED.items()):
        for bank, title in banks().items():
            if f"{name}_{bank}" not in _REGISTRY:
                variant = type(f"{cls.__name__}{title}", (cls,), {
                    "prototype_bank": bank, "__doc__": doc.format(name=name, title=title), "__module__": cls.__module__})
                register(f"{name}_{bank}")(variant)


_discovered = False


def _discover() -> None:
    """Import every detector module once (a dry run asks the registry thousands of times)."""
    global _discovered
    if _discovered:
        return
    import peekflow.ood as package

    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_DETECTORS:
            importlib.import_module(f"{package.__name__}.{info.name}")
    _discovered = True


def available() -> list[str]:
    """Names of every registered OOD method."""
    _discover()
    _bank_variants()
    return sorted(_REGISTRY)


def detector_class(name: str) -> type[Detector]:
    valid = available()
    if name not in _REGISTRY:
        raise ValueError(f"unknown OOD method {name!r}; valid methods: {valid}")
    return _REGISTRY[name]


def _setting_names(cls) -> list[str]:
    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def build(name: str, settings: dict | None = None) -> Detector:
    """Construct detector `name` with keyword `settings`; unknown names or keys fail, naming them."""
    cls = detector_class(name)
    settings = dict(settings or {})
    valid = _setting_names(cls)
    unknown = sorted(set(settings) - set(valid))
    if unknown:
        raise ValueError(f"OOD method {name!r}: unknown setting(s) {unknown}; valid settings: {valid}")
    return cls(**settings)


def stored_logits(data: FeatureSet) -> np.ndarray:
    """The logits of `data` as stored (no float64 copy), [N, K], K >= 1; fail naming the data set otherwise."""
    z = np.asarray(data.logits)
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"data set {data.name!r}: logits must be [N, K] with K >= 1, got shape {z.shape}")
    return z


def checked_logits(data: FeatureSet) -> np.ndarray:
    """The logits of `data` as float64 [N, K], K >= 1; fail naming the data set otherwise."""
    return np.asarray(stored_logits(data), dtype=np.float64)


def checked_features(data: FeatureSet) -> np.ndarray:
    """The pooled features of `data` as [N, C]; fail naming the data set if they were not loaded."""
    if data.features is None:
        raise ValueError(f"data set {data.name!r} has no features loaded: load it with the penultimate layer name")
    x = np.asarray(data.features)
    if x.ndim != 2:
        raise ValueError(f"data set {data.name!r}: features must be [N, C], got shape {x.shape}")
    return x


def _symbolic_links(folder: str) -> frozenset[str]:
    """Names of the symbolic links in `folder` (one directory listing; empty if it cannot be listed)."""
    try:
        with os.scandir(folder) as entries:
            return frozenset(e.name for e in entries if e.is_symlink())
    except OSError:
        return frozenset()


def _already_real(paths: list[str]) -> bool:
    """True if every path is its own realpath: absolute and normalised (no '.', '..', '//', trailing '/'), in a
    folder that is its own realpath and holds no symbolic link. The string checks run over all paths joined (C
    speed); each folder costs one realpath and one listing."""
    try:
        joined = "\n".join(paths)
    except TypeError:  # bytes or other non-str rows
        return False
    rows = len(paths)
    if joined.count("\n") != rows - 1 or not joined.startswith("/") or joined.count("\n/") != rows - 1:
        return False  # a newline inside a path, or a relative path
    if "//" in joined or "/." in joined or "/\n" in joined or joined.endswith("/"):
        return False
    for head in {p.rpartition("/")[0] or "/" for p in paths}:
        if os.path.realpath(head) != head or _symbolic_links(head):
            return False
    return True


def resolved_paths(paths) -> list[str]:
    """os.path.realpath of every non-empty path. Banks can hold millions of rows, so no path costs a system call of
    its own: the common case (absolute paths in real folders without links) is recognised as a whole and returned
    as it is; otherwise each folder is resolved and listed once (for the files in it that are symbolic links)."""
    paths = paths if isinstance(paths, list) else list(paths)
    if "" in paths or None in paths:  # rows without an image file (e.g. synthetic prototypes) overlap nothing
        paths = [p for p in paths if p]
    if _already_real(paths):
        return paths
    folders: dict[str, tuple[str, frozenset[str]]] = {}
    out = []
    for p in paths:
        if not (isinstance(p, str) and p.startswith("/") and "//" not in p and "/." not in p and p[-1] != "/"):
            p = os.fsdecode(os.path.abspath(p))  # relative, '.', '..', '//', trailing '/'
        head, _, tail = p.rpartition("/")
        if head not in folders:
            real = os.path.realpath(head or "/")
            folders[head] = (real.rstrip("/") + "/", _symbolic_links(real))
        prefix, links = folders[head]
        out.append(os.path.realpath(prefix + tail) if tail in links else prefix + tail)
    return out


def check_disjoint(method: str, fit_paths: list[str], fit_name: str, data: FeatureSet) -> None:
    """Fail if `data` shares an image (after realpath) with the store a detector was fitted on (`fit_paths`, as
    returned by resolved_paths): fitting on the scored images would leak them. Only the scored paths become a set:
    the fit bank, often far larger, is only iterated (its strings keep their hashes between calls)."""
    scored = resolved_paths(data.paths)
    if not set(scored).isdisjoint(fit_paths):
        fit = set(fit_paths)
        shared = [p for p in scored if p in fit]
        raise ValueError(
            f"{method}: {len(shared)} image(s) of {data.name!r} are also in the reference bank {fit_name!r} "
            f"(first: {shared[:3]}); the bank must be the ID training store, disjoint from scored data"
        )


def positive_number(value, what: str, integer: bool = False):
    """Validate a positive setting (int if `integer`); return it unchanged."""
    ok = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if isinstance(value, bool) or not ok or not (np.isfinite(value) and value > 0):
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"{what} must be {kind}, got {value!r}")
    return value
