"""Stage settings: a dataclass per stage, filled from a JSON object given on the command line.

Rules pass their hyper-parameters as one JSON string (`--settings`), so Snakemake sees every value as a param and
reruns a job exactly when one changes. Unknown or missing keys fail with the key's name.
"""

from __future__ import annotations

import dataclasses
import json
import typing


class SettingsError(ValueError):
    pass


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
    """Build dataclass `cls` from a JSON string or dict; reject keys that `cls` does not define."""
    data = json_object(text, where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise SettingsError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    missing = [
        name
        for name, f in fields.items()
        if name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SettingsError(f"{where}: missing key(s) {missing}")
    return cls(**data)


def describe(cls) -> str:
    """One line per field for --help: name, type and default."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f" = {f.default!r}"
        elif f.default_factory is not dataclasses.MISSING:
            default = f" = {f.default_factory()!r}"
        else:
            default = " (required)"
        lines.append(f"  {f.name}: {getattr(hints[f.name], '__name__', hints[f.name])}{default}")
    return "\n".join(lines)


def to_json(obj) -> str:
    """Canonical JSON of a settings dataclass (stored in output attributes)."""
    return json.dumps(dataclasses.asdict(obj), sort_keys=True)
