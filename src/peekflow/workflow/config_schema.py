"""The config's stage blocks, generated from the settings classes: `python -m peekflow.workflow.config_schema`
rewrites them in workflow/schemas/config.schema.yaml and the reference page docs/settings.md (`--check`: fail if either
differs), and `settings_problems(config)` checks every settings block of a config against its class, reporting all
problems at once with their config paths.

`blocks()` maps a config path (`*`: any key) to its settings class and the workflow's own keys of that block
(threads, the data set, ...), whose schemas are written here: the stages' BLOCKS and a block per registered prototype
method (peekflow.prototypes.methods); the OOD methods' blocks come from the OOD registry. The rest of the schema
(datasets, models, generate, ...) is written by hand in the schema file and kept as it is. `workflow_schema()` is the
schema as the registries generate it, which the Snakefile checks configs against (the file is its committed copy).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import inspect
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from peekflow import settings as S
from peekflow.emergence.analysis import EmergenceSettings
from peekflow.emergence.trajectory import TrajectorySettings
from peekflow.features.extract import ExtractSettings
from peekflow.neurons.dora import DoraSettings
from peekflow.neurons.invert import InvertSettings
from peekflow.neurons.patches import PatchSettings
from peekflow.neurons.topn import RankSettings
from peekflow.neurons.vital import VitalSettings
from peekflow.ood import base as ood
from peekflow.ood.papers import CompareSettings
from peekflow.probing import ProbeSettings
from peekflow.prototypes.methods import PrototypeMethod, methods as prototype_methods
from peekflow.models.training import TrainSettings
from peekflow.semantics.settings import SemanticsSettings
from peekflow.workflow.yaml_dump import dump

SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "config.schema.yaml"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "settings.md"


def threads(what: str = "job") -> dict:
    return {"type": "integer", "minimum": 1, "default": 1, "description": f"torch CPU threads per {what}"}


def dataset(description: str) -> dict:
    return {"type": "string", "description": description}


@dataclass
class Block:
    path: str  # config path, `*` = any key
    settings: type  # its settings class
    workflow: dict = field(default_factory=dict)  # keys the workflow reads itself -> their schema
    filled: tuple = ()  # keys of the class the workflow fills in (not in the config)
    required: tuple = ()  # required workflow keys
    description: str | None = None  # of the block; None: keep the schema file's


EXTRACT = Block("extract", ExtractSettings, filled=("layers", "maps"), workflow={
    "threads": threads(), "shards": {
        "type": "object", "default": {}, "additionalProperties": {"type": "integer", "minimum": 1},
        "description": "data set -> number of extraction jobs (shards) whose stores are merged; absent = 1"}})
BLOCKS = [
    Block("probing.settings", ProbeSettings),
    Block("models.*.train.settings", TrainSettings),
    Block("labels.dora", DoraSettings),
    Block("labels.invert", InvertSettings, required=("dataset",), workflow={
        "dataset": dataset("data set of `datasets` whose feature store gives the activations"),
        "attributes": dataset("its attributes.csv (default: the generated set's)")}),
    Block("neurons.ranking", RankSettings, description="how the top-N images are ranked (`peekflow topn --help`)"),
    Block("neurons.patches", PatchSettings),
    Block("neurons.vital", VitalSettings, required=("layers",), workflow={
        "layers": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                   "description": "neuron layers of the target to visualise (their patches are the references)"}},
          description="VITAL visualisations (`peekflow vital --help`); absent = none"),
    Block("emergence", EmergenceSettings, required=("dataset", "layers"), workflow={
        "dataset": dataset("data set whose images are analysed (a seeded subsample per class)"),
        "layers": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                   "description": "layers of the target, shallow to deep"},
        "threads": threads()}),
    Block("emergence.trajectory", TrajectorySettings),
    Block("semantics", SemanticsSettings, description="class semantics: every target's and the probe's classes "
          "mapped to WordNet 3.0 synsets (results/semantics/<model>/), PEEK probing and DORA's output units judged "
          "against them (`peekflow semantics --help`); absent = none, and no WordNet needed"),
    Block("ood.compare", CompareSettings, description="the OOD table set beside published tables (`peekflow compare "
          "--help`; rule compare_with_papers: results/paper_comparison.csv, .md); absent = none"),
]
OOD_METHODS = "ood.methods"
# the blocks of the schema file's hand-written part that the reference page documents too (before the stages'), and
# the generated block that belongs with them
HAND_WRITTEN = ["datasets.*", "models.*", "models.*.preprocessing", "models.*.train", "models.*.train.settings"]


def prototype_block(method: PrototypeMethod) -> Block:
    references = {"dataset": dataset("data set of the reference images (default ood.id_test)")}
    return Block(f"prototypes.methods.{method.name}", method.settings_class(),
                 workflow=references if method.references else {},
                 description=f"{method.summary} (`peekflow {method.command} --help`); absent = none")


def blocks() -> list[Block]:
    """Every settings block: extraction's, each registered prototype method's, then the other stages' (BLOCKS)."""
    return [EXTRACT, *(prototype_block(m) for m in prototype_methods().values()), *BLOCKS]


def workflow_schema(path: str | Path = SCHEMA) -> dict:
    """The config schema as the registries generate it: the schema file's hand-written part and every block."""
    return generate(yaml.safe_load(Path(path).read_text()))


def detector_settings(cls) -> type:
    """A settings dataclass of an OOD detector's keyword settings: types and defaults from its __init__, help from
    its `settings_help`; a key of its `sweeps` may also be a list."""
    hints = typing.get_type_hints(cls.__init__)
    fields = []
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        hint = hints.get(p.name, typing.Any)
        if p.name in cls.sweeps:
            hint = hint | list[hint]
        default = dataclasses.MISSING if p.default is p.empty else p.default
        fields.append((p.name, hint, S.setting(default, cls.settings_help.get(p.name, ""))))
    return dataclasses.make_dataclass(f"{cls.__name__}Settings", fields)


def detector_description(cls) -> str:
    doc = cls.__dict__.get("__doc__") or sys.modules[cls.__module__].__doc__ or cls.__name__
    return " ".join(doc.strip().split("\n\n")[0].split())


def field_schema(hint, f: dataclasses.Field) -> dict:
    meta, kinds = f.metadata, list(dict.fromkeys(S.json_types(hint)))
    if "integer" in kinds and "number" in kinds:
        kinds.remove("integer")
    limits = {key: meta.get(name) for name, key in zip(S.LIMITS, ("minimum", "exclusiveMinimum", "maximum"))
              if meta.get(name) is not None}
    out = {}
    if meta.get("choices"):
        others = [k for k in kinds if k != "string"]
        if others:
            out["anyOf"] = [{"enum": list(meta["choices"])}, typed(others, hint, limits)]
        else:
            out.update({"enum": list(meta["choices"])})
    else:
        out.update(typed(kinds, hint, limits))
    default = S.default_of(f)
    if default is not dataclasses.MISSING:
        out["default"] = list(default) if isinstance(default, tuple) else default
    if meta.get("help"):
        out["description"] = meta["help"]
    return out


def typed(kinds: list[str], hint, limits: dict) -> dict:
    out = {"type": kinds[0] if len(kinds) == 1 else kinds} if kinds else {}
    items = S.item_types(hint)
    if items and "array" in kinds:
        out["items"] = {"type": items[0] if len(items) == 1 else items, **limits}
    return out | (limits if set(kinds) & {"integer", "number"} else {})


def object_schema(cls, block: Block | None = None, old: dict | None = None) -> dict:
    """The block's schema: the class's keys (less those the workflow fills) and the workflow's own keys."""
    block = block or Block("", cls)
    old = old or {}
    hints = typing.get_type_hints(cls)
    props = dict(block.workflow)
    required = list(block.required)
    for f in dataclasses.fields(cls):
        if f.name not in block.filled:
            props[f.name] = field_schema(hints[f.name], f)
            if S.default_of(f) is dataclasses.MISSING:
                required.append(f.name)
    kept = {k: v for k, v in old.items() if k not in ("$ref", "type", "additionalProperties", "properties", "required")}
    if block.description:
        kept["description"] = block.description
    return {"type": "object", "additionalProperties": False, **kept, "properties": props,
            **({"required": required} if required else {})}


def schema_node(schema: dict, path: str) -> tuple[dict, str]:
    """(parent node, key) of config path `path` in the schema, creating nodes on the way."""
    node, parts = schema, path.split(".")
    for part in parts[:-1]:
        node = node.setdefault("additionalProperties", {}) if part == "*" else node["properties"][part]
    return node.setdefault("properties", {}), parts[-1]


def generate(schema: dict) -> dict:
    """`schema` with every stage block generated (the hand-written rest kept)."""
    schema = copy.deepcopy(schema)
    schema.get("definitions", {}).pop("settings", None)  # the opaque block every stage used to have
    old = {}
    for block in blocks():
        parent, key = schema_node(schema, block.path)
        old[block.path] = parent.get(key)
    for block in sorted(blocks(), key=lambda b: b.path.count(".")):  # outer blocks first: inner ones come last in them
        parent, key = schema_node(schema, block.path)
        parent[key] = object_schema(block.settings, block, old[block.path])
    parent, key = schema_node(schema, "prototypes.methods")
    parent[key]["additionalProperties"] = False
    parent, key = schema_node(schema, OOD_METHODS)
    parent[key]["additionalProperties"] = False
    parent[key]["properties"] = {
        name: object_schema(detector_settings(cls), Block("", cls, description=detector_description(cls)))
        for name, cls in ((name, ood.detector_class(name)) for name in ood.available())}
    return schema


def config_blocks(config: dict, path: str):
    """(config path, value) of every block at `path` present in `config`."""
    found = [("", config)]
    for part in path.split("."):
        found = [(f"{where}.{key}".lstrip("."), node[key]) for where, node in found if isinstance(node, dict)
                 for key in (node if part == "*" else [part]) if key in node]
    return found


def settings_of(config: dict, path: str, **filled) -> dict:
    """What the config block at `path` (e.g. labels.dora, prototypes.methods.deepdream) gives its command as
    settings: the keys its settings class takes (not the workflow's own keys, not the blocks inside it), and
    `filled` (keys the workflow fills in)."""
    parts = path.split(".")
    block = next(b for b in blocks() if len(b.path.split(".")) == len(parts)
                 and all(p in ("*", q) for p, q in zip(b.path.split("."), parts)))
    names = {f.name for f in dataclasses.fields(block.settings)}
    ((_, data),) = config_blocks(config, path)
    return {key: value for key, value in (data or {}).items() if key in names} | filled


def settings_problems(config: dict) -> list[str]:
    """Every problem of the settings blocks of `config`, each naming its config path: unknown keys (with the
    closest valid name), wrong types, values outside their choices or limits, and the classes' own checks."""
    out = []
    for block in blocks():
        for where, data in config_blocks(config, block.path):
            data = {} if data is None else data
            if not isinstance(data, dict):
                out.append(f"{where}: expected a mapping of settings, got {data!r}")
                continue
            own = (*block.workflow, *inner_blocks(block))  # checked by the schema, or as blocks of their own
            found = [f"{where}.{key}: unknown key (the workflow sets it)" for key in block.filled if key in data]
            found += S.problems(block.settings, {k: v for k, v in data.items() if k not in block.filled}, where,
                                extra_keys=own, optional=block.filled)
            if not found and not block.filled:
                found = construction_problem(block.settings, data, where, skip=own)
            out += found
    for where, methods in config_blocks(config, OOD_METHODS):
        for name, data in (methods or {}).items():
            out += detector_problems(name, {} if data is None else data, f"{where}.{name}")
    return out


def inner_blocks(block: Block) -> list[str]:
    """Keys of `block` that are blocks of their own (emergence.trajectory)."""
    return [b.path[len(block.path) + 1:] for b in blocks() if b.path.rpartition(".")[0] == block.path]


def construction_problem(cls, data: dict, where: str, skip=()) -> list[str]:
    try:
        cls(**{k: v for k, v in data.items() if k not in skip})
    except (ValueError, TypeError) as err:
        return [f"{where}: {err}"]
    return []


def detector_problems(name: str, data, where: str) -> list[str]:
    valid = ood.available()
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=1)
        return [f"{where}: unknown OOD method ({f'did you mean {close[0]}?' if close else f'valid: {valid}'})"]
    if not isinstance(data, dict):
        return [f"{where}: expected a mapping of settings, got {data!r}"]
    cls = ood.detector_class(name)
    found = S.problems(detector_settings(cls), data, where)
    if found:
        return found
    runs = [{**data, key: value} for key in cls.sweeps if isinstance(data.get(key), list) for value in data[key]]
    out = []
    for run in runs or [data]:
        try:
            ood.build(name, run)
        except (ValueError, TypeError) as err:
            out.append(f"{where}: {err}")
    return list(dict.fromkeys(out))


def _kind(node: dict) -> str:
    if "$ref" in node:
        return "object"
    if "enum" in node:
        return " | ".join(map(str, node["enum"]))
    if "const" in node:
        return repr(node["const"])
    options = node.get("oneOf") or node.get("anyOf")
    if options:
        return " or ".join(_kind(o) for o in options)
    kind = node.get("type", "any")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    return f"{kind} of {_kind(node['items'])}" if kind == "array" and "items" in node else kind


def _cell(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def docs(schema: dict) -> str:
    """docs/settings.md: every settings block of the config, key by key, from the generated schema."""
    lines = ["# Settings reference", "",
             "Every settings block of the workflow config, key by key: its type, default and what it sets. Generated by",
             "`python -m peekflow.workflow.config_schema` from the settings classes (the only place a default is",
             "written); the same text is in `workflow/schemas/config.schema.yaml` and in `peekflow <stage> --help`. A",
             "key left out takes its default. `*` stands for a name of your choosing (a data set's, a model's). The",
             "data sets and models come first (their keys are written in the schema file itself), then the stages.", ""]
    generated = [b.path for b in blocks() if b.path not in HAND_WRITTEN]
    for path in [*HAND_WRITTEN, *generated, *(f"{OOD_METHODS}.{m}" for m in ood.available())]:
        node = node_at(schema, path)
        lines += [f"## `{path}`", ""]
        if node.get("description"):
            lines += [_cell(node["description"]), ""]
        props = node.get("properties", {})
        if not props:
            lines += ["No settings.", ""]
            continue
        lines += ["| key | type | default | what it sets |", "|---|---|---|---|"]
        for name, prop in props.items():
            default = "(required)" if name in node.get("required", []) else f"`{json_default(prop)}`"
            lines.append(f"| `{name}` | {_cell(_kind(prop))} | {default} | {_cell(prop.get('description', ''))} |")
        lines.append("")
    return "\n".join(lines)


def node_at(schema: dict, path: str) -> dict:
    """The schema node of config path `path` (`*`: any key), local `$ref`s resolved."""
    node = schema
    for part in path.split("."):
        node = resolved(schema, node)
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    return resolved(schema, node)


def resolved(schema: dict, node: dict) -> dict:
    """`node` with a local `$ref` (#/definitions/...) replaced by what it points at."""
    if "$ref" not in node:
        return node
    target = schema
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return {**{k: v for k, v in node.items() if k != "$ref"}, **target}


def json_default(prop: dict) -> str:
    import json

    return json.dumps(prop["default"]) if "default" in prop else "-"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the schema file is not the generated one")
    parser.add_argument("--schema", default=str(SCHEMA), help="the schema file (default: the workflow's)")
    parser.add_argument("--docs", default=str(DOCS), help="the settings reference page (default: docs/settings.md)")
    args = parser.parse_args(argv)
    path = Path(args.schema)
    text = path.read_text()
    generated = generate(yaml.safe_load(text))
    wanted = {path: dump(generated), Path(args.docs): docs(generated) + "\n"}
    stale = [p for p, content in wanted.items() if not p.exists() or p.read_text() != content]
    if args.check:
        for p in stale:
            print(f"{p} differs from the generated one: run python -m peekflow.workflow.config_schema", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(wanted[p])
    return 0


if __name__ == "__main__":
    sys.exit(main())
