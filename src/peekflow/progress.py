"""Progress for long loops: a tqdm bar on a terminal, plain log lines (every ~10%) when writing to a log file."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("peekflow")


def progress(iterable, total: int | None = None, desc: str = "", every: float = 0.1):
    if total is None:
        total = len(iterable) if hasattr(iterable, "__len__") else None
    if sys.stderr.isatty():
        yield from tqdm(iterable, total=total, desc=desc)
        return
    start = time.perf_counter()
    next_mark = every
    for i, item in enumerate(iterable, 1):
        yield item
        if total and i / total >= next_mark - 1e-9:
            log.info("%s: %d/%d (%.0f%%) %.1fs", desc, i, total, 100 * i / total, time.perf_counter() - start)
            while next_mark <= i / total + 1e-9:
                next_mark += every


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
