"""Stage settings: a dataclass per stage, filled from a JSON object given on the command line.

Rules pass their hyper-parameters as one JSON string (`--settings`), so Snakemake sees every value as a param and
reruns a job exactly when one changes. A settings class is the one place where a key's type, default and help (with
its unit) are written: `setting(default, help, choices=..., minimum=...)` declares a key; the config schema
(peekflow.workflow.config_schema), `peekflow <stage> --help` (`describe`) and the checks (`problems`) all read it.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing

LIMITS = ("minimum", "exclusive_minimum", "maximum")
JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", tuple: "array",
              dict: "object", type(None): "null"}
TYPE_NAMES = {"boolean": "true or false", "integer": "an integer", "number": "a number", "string": "a string",
              "array": "a list", "object": "a mapping", "null": "null"}


class SettingsError(ValueError):
    pass


def setting(default, help: str, *, choices=None, minimum=None, maximum=None, exclusive_minimum=None):
    """A settings key: its default, a one-line help with the unit, and optional limits. `choices` are the strings
    allowed (beside the key's other types, e.g. "all" or a list); the limits apply to numbers."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "minimum": minimum, "maximum": maximum,
            "exclusive_minimum": exclusive_minimum}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: json.loads(json.dumps(default)), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def required(help: str, **limits):
    """A key without a default."""
    return setting(dataclasses.MISSING, help, **limits)


def redefault(cls, name: str, default=dataclasses.MISSING):
    """Key `name` of settings class `cls` (its help and limits) for another class: a subclass giving it another
    `default`, or a class taking the key over as it is (no `default`)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    default = default_of(f) if default is dataclasses.MISSING else default
    return setting(default, f.metadata["help"], **{k: f.metadata[k] for k in ("choices", *LIMITS)})


def default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def json_types(hint) -> list[str]:
    """JSON-schema types of a type hint (int | None -> ["integer", "null"])."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(hint) for t in json_types(arg)]
    kind = JSON_TYPES.get(typing.get_origin(hint) or hint)  # None: a type JSON does not name (not checked)
    return [kind] if kind else []


def item_types(hint) -> list[str] | None:
    """JSON types of a typed list's items (list[int] -> ["integer"]), else None."""
    for arg in typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else [hint]:
        if typing.get_origin(arg) is list and typing.get_args(arg):
            return json_types(typing.get_args(arg)[0])
    return None


def is_type(value, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, {"boolean": bool, "integer": int, "number": (int, float), "string": str,
                              "array": (list, tuple), "object": dict, "null": type(None)}[kind])


def value_problem(value, hint, meta) -> str | None:
    """Why `value` does not fit a key of type `hint` with metadata `meta` (choices, limits); None if it does."""
    kinds = json_types(hint)
    if kinds and not any(is_type(value, k) for k in kinds):
        choices = [repr(c) for c in meta.get("choices") or ()]
        allowed = " or ".join(dict.fromkeys(choices + [TYPE_NAMES[k] for k in kinds if k != "string" or not choices]))
        return f"expected {allowed}, got {value!r}"
    if isinstance(value, str) and meta.get("choices") and value not in meta["choices"]:
        return f"{value!r} is not one of {list(meta['choices'])}"
    items = item_types(hint)
    if items and isinstance(value, (list, tuple)):
        bad = [v for v in value if not any(is_type(v, k) for k in items)]
        if bad:
            return f"expected a list of {' or '.join(items)} values, got {bad[0]!r} in it"
    if is_type(value, "number"):
        low, above, high = (meta.get(k) for k in LIMITS)
        if (low is not None and value < low) or (high is not None and value > high) or (
                above is not None and value <= above):
            return f"must be {limit_text(meta)}, got {value!r}"
    return None


def limit_text(meta) -> str:
    parts = [f"{op} {meta[k]}" for k, op in zip(LIMITS, (">=", ">", "<=")) if meta.get(k) is not None]
    return " and ".join(parts)


def hints(cls) -> dict:
    return typing.get_type_hints(cls)


def problems(cls, data: dict, where: str, extra_keys=(), optional=()) -> list[str]:
    """Every problem of the JSON object `data` as settings of `cls`: unknown keys (with the closest valid names),
    missing required keys (but those in `optional`), wrong types, values outside choices or limits. `extra_keys` are
    accepted unchecked."""
    import difflib

    fields = {f.name: f for f in dataclasses.fields(cls)}
    types_of = hints(cls)
    out = []
    for key, value in data.items():
        if key in extra_keys:
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, [*fields, *extra_keys], n=1)
            hint = f"did you mean {close[0]}?" if close else f"valid keys: {sorted([*fields, *extra_keys])}"
            out.append(f"{where}.{key}: unknown key ({hint})")
            continue
        problem = value_problem(value, types_of[key], fields[key].metadata)
        if problem:
            out.append(f"{where}.{key}: {problem}")
    out += [f"{where}.{name}: missing (required)" for name, f in fields.items()
            if name not in data and name not in optional and default_of(f) is dataclasses.MISSING]
    return out


class Settings:
    """Base of the settings dataclasses: checks every value against its key's type, choices and limits."""

    def __post_init__(self):
        found = problems(type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                         type(self).__name__)
        if found:
            raise SettingsError("; ".join(found))


def json_object(text: str | dict | None, where: str = "settings") -> dict:
    """A JSON object given as text (or already a dict; empty means {}); fail naming `where` otherwise."""
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        return dict(text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SettingsError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


def parse_settings(cls, text: str | dict | None, where: str = "settings"):
    """Build dataclass `cls` from a JSON string or dict; every problem (unknown keys, types, ...) fails at once."""
    data = json_object(text, where)
    found = problems(cls, data, where)
    if found:
        raise SettingsError("; ".join(found))
    return cls(**data)


def type_text(hint) -> str:
    names = {"integer": "int", "number": "float", "boolean": "bool", "string": "str", "array": "list",
             "object": "dict", "null": "None"}
    return " | ".join(names[t] for t in dict.fromkeys(json_types(hint)))


def describe(cls) -> str:
    """Two lines per key for --help: name, type and default; then its help."""
    types_of = hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        default = default_of(f)
        default = " (required)" if default is dataclasses.MISSING else f" = {json.dumps(default)}"
        lines.append(f"  {f.name}: {type_text(types_of[f.name])}{default}")
        if f.metadata.get("help"):
            only_strings = json_types(types_of[f.name]) == ["string"]
            extra = [f"one of {list(f.metadata['choices'])}"] if f.metadata.get("choices") and only_strings else []
            extra += [limit_text(f.metadata)] if limit_text(f.metadata) else []
            lines.append(f"      {f.metadata['help']}" + (f" [{'; '.join(extra)}]" if extra else ""))
    return "\n".join(lines)


def to_json(obj) -> str:
    """Canonical JSON of a settings dataclass (stored in output attributes)."""
    return json.dumps(dataclasses.asdict(obj), sort_keys=True)
