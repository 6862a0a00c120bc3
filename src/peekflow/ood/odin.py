"""ODIN: temperature scaling and input perturbation (Liang, Li & Srikant, "Enhancing the Reliability of
Out-of-distribution Image Detection in Neural Networks", ICLR 2018).

    y   = argmax_k f(x)_k
    x~  = x - epsilon * sign( grad_x CE(f(x) / T, y) ) / std      on the normalised input x, per channel std
    score(x) = max_k softmax(f(x~) / T)_k

The step is epsilon in [0,1] pixel units: dividing by the normalisation's std makes it epsilon in normalised units,
as the original code does. T (`temperature`, default 1000) and epsilon (`epsilon`, default 0.0014) are the paper's
ImageNet-scale settings. ODIN needs the model and the images (`needs_images`), so it runs its own batched pass over
each image folder (images in the order of a feature store); the final softmax is taken in float64. Higher = more ID.
"""

from __future__ import annotations

import numpy as np

from peekflow.ood.base import Detector, positive_number, register
from peekflow.progress import progress


def odin_scores(model, x, std, temperature: float, epsilon: float) -> np.ndarray:
    """ODIN scores (float64 [B]) of a batch `x` of normalised images [B,3,H,W]; `std` the per-channel std [3].

    The model must be in eval mode (its outputs must not depend on the batch)."""
    import torch
    import torch.nn.functional as F

    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        # summed, not averaged: each image's gradient is its own whatever the batch
        loss = F.cross_entropy(logits / temperature, logits.argmax(dim=1), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    perturbed = x.detach() - epsilon * torch.sign(grad) / std
    with torch.no_grad():
        z = model(perturbed).double() / temperature
    return torch.softmax(z, dim=1).amax(dim=1).cpu().numpy()


@register("odin")
class ODIN(Detector):
    precision = "the model's own passes (float32); the final softmax in float64 (1e-12 on a float64 model)"
    needs_images = True
    gpu_helps = True  # forward, backward, forward through the model
    settings_help = {"temperature": "softmax temperature T", "epsilon": "input perturbation step, normalised-input units",
                     "batch_size": "images per forward and backward pass"}

    def __init__(self, temperature: float = 1000.0, epsilon: float = 0.0014, batch_size: int = 64):
        self.temperature = float(positive_number(temperature, "odin: temperature"))
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 <= epsilon < 1:
            raise ValueError(f"odin: epsilon must be a number in [0, 1), got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.batch_size = int(positive_number(batch_size, "odin: batch_size", integer=True))

    def score_images(self, model, root, preprocessing, device) -> np.ndarray:
        import torch

        from peekflow.data.folder import ImageFolder, collate

        loader = torch.utils.data.DataLoader(ImageFolder(root, None, preprocessing), batch_size=self.batch_size,
                                             collate_fn=collate, pin_memory=device.type == "cuda")
        model = model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)  # gradients for the input only
        out = []
        for images, _labels, _paths, _bad in progress(loader, desc=f"odin {root}"):
            out.append(odin_scores(model, images.to(device), preprocessing.std, self.temperature, self.epsilon))
        return np.concatenate(out)
