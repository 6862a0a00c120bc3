"""A throw-away prototype method and OOD detector, registered at run time and nowhere else (tests/test_registries.py):
what a new method needs to be known to the config checks, the rules and the SLURM requests."""

from __future__ import annotations

import numpy as np

from peekflow.ood.base import Detector, register as register_detector
from peekflow.prototypes.methods import PrototypeMethod, register as register_method

# DeepDream's command and settings under another name; its prototypes make a data-free bank (knn_throwaway, ...)
METHOD = PrototypeMethod("throwaway", "dream", "peekflow.prototypes.deepdream:DreamSettings",
                         "peekflow.prototypes.deepdream:dream_targets", "throw-away prototypes", "Throwaway",
                         bank=True)
DETECTOR = "throwaway_ood"


class Throwaway(Detector):
    """A throw-away detector that a GPU speeds up."""

    gpu_helps = True

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def score(self, data) -> np.ndarray:
        return -self.scale * np.asarray(data.logits, dtype=np.float64).max(axis=1)


def register() -> None:
    register_method(METHOD)
    register_detector(DETECTOR)(Throwaway)
