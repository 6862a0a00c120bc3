"""Cluster requests of a job (mem_mb, runtime in minutes, cpus_per_task) from the numbers its work grows with.

Pure functions of counts and sizes; peekflow.workflow.requests feeds them from the config and the job's inputs. Each
estimate is the work in seconds of one CPU thread, spread over the job's threads (or a GPU), times a safety margin, then
floored, multiplied by the attempt (a retry gets more) and capped. `python -m peekflow.workflow.resource_table`
tabulates the requests a dry run plans (docs/cluster.md: "Resource requests"). A rule's costs are ResNet-50's per
pixel, so smaller networks get generous requests.
"""

from __future__ import annotations

import math

# Measured figures (README "Running on real data", benchmarks/README.md: store_size.py, extract_224.py)
STORE_KB_PER_IMAGE = 28.7  # feature store of ImageNet / ResNet-50 (layer3 + layer4 features and maxima, logits)
EXTRACT_S_PER_IMAGE = 65 * 3600 / 1.38e6  # ~65 CPU-hours for ImageNet's ~1.38M images at 224 px: 0.17 s per image
# (ODIN's forward-backward-forward, measured at 0.59 s per image, is close to 3 of these)
STEP_S_PER_IMAGE = 0.33  # DeepInversion, ResNet-50, 224 px, one CPU thread: seconds per optimiser step per image
REFERENCE_SIDE = 224  # the pixel side of both figures; other sides scale with the pixel count

# Assumptions (not measured here; each errs towards asking more)
TRAIN_COST = 3.0  # a training step (forward + backward + update) per image, in forward passes
GPU_SPEEDUP = 50.0  # one GPU against one CPU thread on convolutional networks (docs/real-data.md's decoding-bound
# estimate for extraction with 8 loader workers, ~2,200 images/s, is 7x this: the request errs long)
THREAD_EFFICIENCY = 0.7  # share of a linear speed-up that each further thread gives
KNN_FLOPS_PER_S = 2e10  # float32 matrix products per CPU thread (KNN's distances)
READ_S_PER_MB = 0.05  # reading and fitting stored features, per MB
SAFETY = 2.0  # margin on every runtime estimate
BASE_MB = 1500  # a Python process with torch and the model
WORKER_MB = 400  # one DataLoader worker process
ACTIVATION_FACTOR = 30  # activations held in a forward pass, in multiples of the input batch's bytes
BACKWARD_FACTOR = 60  # the same with the graph kept for a backward pass
GENERATE_S_PER_IMAGE = 0.01  # rendering one embedded-default image (shape, texture or noise) and its PNG
EMBED_S_PER_ROW_STEP = 1e-3  # the emergence analysis: one sample's embedding at one layer, one step
EMBED_MB_PER_ROW = 1.0  # the same: its maps and embeddings

# Limits of a request
MIN_MB, MAX_MB = 1000, 500_000
MIN_MINUTES, MAX_MINUTES = 5, 7 * 24 * 60


def pixels(side: int) -> float:
    """Cost of an image of `side` px against the reference side."""
    return (side / REFERENCE_SIDE) ** 2


def batch_mb(batch_size: int, side: int, factor: float) -> float:
    """Memory of a batch's activations: `factor` times its float32 RGB input."""
    return batch_size * 3 * side * side * 4 * factor / 1e6


def speed(threads: int = 1, gpu: bool = False) -> float:
    """How many CPU threads' work a job does per second: GPU_SPEEDUP on a GPU, else its threads' sub-linear speed-up."""
    return GPU_SPEEDUP if gpu else 1 + THREAD_EFFICIENCY * (max(threads, 1) - 1)


def request(seconds: float, mem_mb: float, *, threads: int = 1, gpu: bool = False, workers: int = 0,
            attempt: int = 1) -> dict[str, int]:
    """{mem_mb, runtime, cpus_per_task} of `seconds` of one-thread work using `mem_mb`, on `threads` threads (or a
    GPU) with `workers` loader processes; retries (attempt 2, 3, ...) get `attempt` times the memory and time."""
    minutes = math.ceil(max(seconds / speed(threads, gpu) * SAFETY / 60, MIN_MINUTES)) * attempt
    mem = math.ceil(max(mem_mb + workers * WORKER_MB, MIN_MB)) * attempt
    return {
        "mem_mb": int(min(mem, MAX_MB)),
        "runtime": int(min(minutes, MAX_MINUTES)),
        "cpus_per_task": max(threads, workers + 1 if workers else 1),
    }


def forward(n_images: int, side: int, batch_size: int, passes: float = 1.0) -> tuple[float, float]:
    """(seconds, MB) of running a network over `n_images` images `passes` times: extraction, patches, probing."""
    return (n_images * passes * EXTRACT_S_PER_IMAGE * pixels(side),
            BASE_MB + batch_mb(batch_size, side, ACTIVATION_FACTOR))


def training(n_images: int, epochs: int, side: int, batch_size: int) -> tuple[float, float]:
    return (n_images * epochs * TRAIN_COST * EXTRACT_S_PER_IMAGE * pixels(side),
            BASE_MB + batch_mb(batch_size, side, BACKWARD_FACTOR))


def synthesis(n_images: int, steps: int, side: int, batch_size: int) -> tuple[float, float]:
    """Optimising `n_images` images for `steps` steps (prototypes, caricatures, DORA's signals)."""
    return (n_images * steps * STEP_S_PER_IMAGE * pixels(side),
            BASE_MB + batch_mb(min(batch_size, max(n_images, 1)), side, BACKWARD_FACTOR))


def scoring(fit_images: int, eval_images: int, dim: int, classes: int, pairwise: bool = False) -> tuple[float, float]:
    """Fitting a detector on `fit_images` stored rows and scoring `eval_images`: each row's `dim` features and
    `classes` logits (float32) read into memory and copied once; all pairwise distances for KNN."""
    mb = (fit_images + eval_images) * (dim + classes) * 4 / 1e6
    seconds = mb * READ_S_PER_MB
    if pairwise:
        seconds += 2 * fit_images * eval_images * dim / KNN_FLOPS_PER_S
    return seconds, BASE_MB + 2 * mb


def files(mb: float, held: float = 2.0) -> tuple[float, float]:
    """Reading, copying or tabulating `mb` MB of result files (no network), `held` times their size in memory at once
    (0: block by block)."""
    return mb * READ_S_PER_MB, BASE_MB + held * mb


def embedding(n_rows: int, steps: int) -> tuple[float, float]:
    """Optimising `n_rows` small embeddings (samples x layers) for `steps` steps: the emergence analysis."""
    return n_rows * steps * EMBED_S_PER_ROW_STEP, BASE_MB + n_rows * EMBED_MB_PER_ROW


def generation(n_images: int) -> tuple[float, float]:
    """Rendering `n_images` embedded-default images."""
    return n_images * GENERATE_S_PER_IMAGE, BASE_MB
