"""A YAML writer for hand-read files such as the config schema: a mapping or list goes on one line in flow style
(`{type: integer, minimum: 1}`) when it fits in WIDTH columns, else in block style; a long string is folded (`>-`).
Checked by a round trip: yaml.safe_load(dump(x)) == x."""

from __future__ import annotations

import json
import textwrap

import yaml

WIDTH = 120


def scalar(value, flow: bool = False) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        text = repr(value)
        return format(value, ".12f").rstrip("0") if "e" in text else text
    plain = str(value)
    special = ",[]{}" if flow else ""
    return plain if plain and loads_back(plain) and not any(c in plain for c in special) else json.dumps(
        plain, ensure_ascii=False)


def loads_back(plain: str) -> bool:
    """Whether `plain`, unquoted, reads back as the same string."""
    if plain != plain.strip() or ": " in plain or " #" in plain:
        return False
    try:
        return yaml.safe_load(f"k: {plain}") == {"k": plain}
    except yaml.YAMLError:
        return False


def flow(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{scalar(k, True)}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    return scalar(value, True)


def lines(value, indent: int) -> list[str]:
    """Block-style lines of a mapping or list at `indent`."""
    pad, out = " " * indent, []
    items = value.items() if isinstance(value, dict) else ((None, v) for v in value)
    for key, v in items:
        head = f"{pad}{scalar(key)}:" if key is not None else f"{pad}-"
        if not isinstance(v, (dict, list)) or not v or len(f"{head} {flow(v)}") <= WIDTH:
            text = scalar(v) if not isinstance(v, (dict, list)) else flow(v)
            if isinstance(v, str) and len(f"{head} {text}") > WIDTH:
                out += [f"{head} >-", *textwrap.wrap(v, WIDTH, initial_indent=pad + "  ",
                                                     subsequent_indent=pad + "  ", break_on_hyphens=False)]
            else:
                out.append(f"{head} {text}")
        elif key is None:  # a list item: its first key on the dash's line
            inner = lines(v, indent + 2)
            out += [f"{pad}- {inner[0].lstrip()}", *inner[1:]]
        else:
            out += [head, *lines(v, indent + 2)]
    return out


def dump(value: dict) -> str:
    text = "\n".join(lines(value, 0)) + "\n"
    if yaml.safe_load(text) != value:
        raise ValueError("yaml_dump: the text does not load back to the value it was written from")
    return text
