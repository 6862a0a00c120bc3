"""Overlap for extraction: images copied to the GPU ahead of their forward pass, results written by a background thread.

On CUDA `on_device` copies batch j+1's images on a side stream while batch j computes, and `to_host` starts
non-blocking copies of a batch's results into pinned host memory, marked by an event; `BackgroundWriter` runs the
writes of the batch files in one thread, in order, at most `depth` batches behind, waiting for each batch's event
first. So the GPU computes batch j+1 while batch j is copied and written. On the CPU the same steps run without
streams (copies are no-ops). A job's error is raised in the submitting thread at its next call (then no later job
runs).
"""

from __future__ import annotations

import contextlib
import queue
import threading

import torch


def on_device(loader, device: torch.device, memory_format=torch.contiguous_format):
    """The loader's (images, labels, paths, skipped) batches with the images on `device` in `memory_format`. On CUDA
    each batch is copied on a side stream once the previous one has been handed out, so the copy overlaps its
    forward pass (pinned images: the loader's pin_memory, or peekflow.data.folder.collate's)."""
    side = torch.cuda.Stream(device) if device.type == "cuda" else None
    for images, *rest in loader:
        if images is not None:
            with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                images = images.to(device, non_blocking=True).contiguous(memory_format=memory_format)
            if side is not None:
                torch.cuda.current_stream(device).wait_stream(side)
                images.record_stream(torch.cuda.current_stream(device))  # freed only after the main stream's use
        yield images, *rest


def to_host(tensors: dict) -> tuple[dict, torch.cuda.Event | None]:
    """Copies of `tensors` (a dict of tensors or of dicts of tensors) on the host, started without waiting on CUDA,
    and an event that completes with them (None on the CPU, where the tensors are returned as they are)."""
    def copy(t):
        return {k: copy(v) for k, v in t.items()} if isinstance(t, dict) else t.to("cpu", non_blocking=True)

    cuda = any(t.is_cuda for t in _leaves(tensors))
    host = copy(tensors)
    if not cuda:
        return host, None
    done = torch.cuda.Event()
    done.record()
    return host, done


def _leaves(t):
    for v in t.values():
        yield from _leaves(v) if isinstance(v, dict) else (v,)


class BackgroundWriter:
    """Runs submitted jobs (callables) in one thread, in order; `submit` blocks while `depth` jobs wait."""

    def __init__(self, depth: int = 2):
        self._jobs: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._cancelled = self._closed = False
        self._thread = threading.Thread(target=self._run, name="peekflow-store-writer", daemon=True)
        self._thread.start()

    def submit(self, job) -> None:
        while True:
            self._raise()
            try:
                self._jobs.put(job, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self, cancel: bool = False) -> None:
        """Wait until every submitted job has run (`cancel`: drop those not yet started), then raise a job's error."""
        self._cancelled = self._cancelled or cancel
        if not self._closed:
            self._closed = True
            self._jobs.put(None)  # the thread takes jobs until this one, so the put returns
            self._thread.join()
        if not cancel:
            self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self._cancelled = True
            raise error

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._cancelled or self._error is not None:
                continue
            try:
                job()
            except BaseException as err:  # raised in the submitting thread
                self._error = err
