"""The classifier's last layer: the linear map from one layer's pooled features to the logits, z = x W^T + b.

Feature methods of OOD detection (ReAct, ASH, DICE, ViM, GradNorm, ...) need W [K,D] and b [K]. Extraction finds
them in the model, among its `nn.Linear` modules (last first) whose shape fits a recorded layer's pooled features
and the logits (`fc` of a ResNet, `classifier[-1]` of a VGG or ViT head), and records them in the store only after
checking on the first batch that pooled features @ W^T + b reproduce the logits (max error below `tolerance` times
the logits' scale). Anything else between the pooled features and the logits (a nonlinearity, a different pooling)
fails that check: then nothing is recorded and the log says why -- at info level, not as a warning: a store of layers
the head does not read (a ViT's blocks before its final norm) is a normal run, and a method that needs W, b on such
a store is refused, naming it, before any job (peekflow.workflow.preflight). Costs K*(D+1) float32 values per store.

Store layout: `last_layer/weight` [K,D] float32, `last_layer/bias` [K] float32; group attributes `module` (its
name in the model) and `input` (the layer whose pooled features it maps).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

LAST_LAYER = "last_layer"
log = logging.getLogger("peekflow.extract")


@dataclass
class LastLayer:
    weight: np.ndarray  # [K, D]
    bias: np.ndarray  # [K]
    module: str  # name of the nn.Linear in the model
    input: str  # the recorded layer whose pooled features it maps

    def logits(self, x: np.ndarray) -> np.ndarray:
        """x [N,D] -> x W^T + b [N,K], float64."""
        return np.asarray(x, dtype=np.float64) @ self.weight.T.astype(np.float64) + self.bias

    def write(self, h5) -> None:
        group = h5.create_group(LAST_LAYER)
        group.create_dataset("weight", data=self.weight.astype(np.float32))
        group.create_dataset("bias", data=self.bias.astype(np.float32))
        group.attrs.update({"module": self.module, "input": self.input})

    @classmethod
    def read(cls, h5, layer: str | None = None) -> LastLayer | None:
        """The last layer a store records (None if it records none, or one that maps another layer than `layer`)."""
        if LAST_LAYER not in h5:
            return None
        group = h5[LAST_LAYER]
        found = cls(group["weight"][:], group["bias"][:], str(group.attrs["module"]), str(group.attrs["input"]))
        return found if layer is None or found.input == layer else None


def find_last_layer(model, pooled: dict, logits, tolerance: float = 1e-4) -> LastLayer | None:
    """The nn.Linear of `model` that maps the pooled features of one of the layers in `pooled` (name -> [B,D]
    tensor) to `logits` [B,K] within `tolerance` * max(1, max |logit|); None (logged) if there is none."""
    from torch import nn

    z = logits.detach().double().cpu()
    scale = max(1.0, float(z.abs().max()))
    tried = []
    for name, module in reversed(list(model.named_modules())):
        if not isinstance(module, nn.Linear) or module.out_features != z.shape[1]:
            continue
        for layer, x in pooled.items():
            if x.ndim != 2 or x.shape[1] != module.in_features:
                continue
            w = module.weight.detach().double().cpu()
            b = module.bias.detach().double().cpu() if module.bias is not None else w.new_zeros(w.shape[0])
            error = float((x.detach().double().cpu() @ w.T + b - z).abs().max())
            if error <= tolerance * scale:
                log.info("last layer: %s maps the pooled features of %s to the logits (max error %.2g)", name,
                         layer, error)
                return LastLayer(w.float().numpy(), b.float().numpy(), name, layer)
            tried.append(f"{name} on {layer} (max error {error:.3g})")
    log.info("last layer not recorded: no nn.Linear of %s maps the pooled features of %s to the logits%s (only OOD "
             "methods that read W, b need it, and the checks before the first job name any configured)",
             type(model).__name__, sorted(pooled), f"; tried {tried}" if tried else "")
    return None
