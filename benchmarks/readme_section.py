"""What every benchmark script shares: its figures live in benchmarks/README.md between
<!-- name:start --> and <!-- name:end -->, replaced on each run with --write-readme."""

from __future__ import annotations

import datetime
import os
import re
import shlex
import sys
from pathlib import Path

README = Path(__file__).with_name("README.md")


def command_line() -> str:
    """The `Command:` line that closes a section: how it was run, and when."""
    argv = ["python", os.path.relpath(sys.argv[0], README.parent.parent), *sys.argv[1:]]
    return f"Command: `{shlex.join(argv)}` — {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"


def write_section(name: str, section: str, readme: Path = README) -> None:
    """Replace (or append) the section `name` of `readme` (default benchmarks/README.md)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = readme.read_text() if readme.exists() else ""
    block = f"{start}\n{section.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)
    print(f"\nwrote {readme}")
