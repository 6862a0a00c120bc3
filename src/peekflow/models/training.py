"""Train a classifier from scratch on an image folder (the embedded default's target and probe models).

Seeded end to end (initialisation, shuffling, augmentation), so the same settings give the same weights on the CPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from peekflow.data.folder import ImageFolder, class_folders, collate
from peekflow.models.registry import build_model
from peekflow.models.spec import ModelSpec
from peekflow.progress import progress
from peekflow.settings import Settings, setting

log = logging.getLogger("peekflow.train")


@dataclass
class TrainSettings(Settings):
    epochs: int = setting(10, "passes over the training set", minimum=1)
    batch_size: int = setting(64, "images per step", minimum=1)
    optimizer: str = setting("sgd", "sgd or adamw", choices=["sgd", "adamw"])
    lr: float = setting(0.05, "(peak) learning rate", minimum=0)
    momentum: float = setting(0.9, "SGD momentum", minimum=0, maximum=1)
    nesterov: bool = setting(True, "Nesterov momentum (SGD with momentum > 0)")
    weight_decay: float = setting(5e-4, "weight decay", minimum=0)
    schedule: str = setting("onecycle", "learning rate per step: onecycle (warm-up to lr, then cosine to ~0), "
                                        "cosine or constant", choices=["onecycle", "cosine", "constant"])
    warmup: float = setting(0.15, "onecycle: share of the steps spent warming up", minimum=0, maximum=1)
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy", minimum=0, maximum=1)
    augment: bool = setting(True, "random horizontal flips and shifts of the training images")
    seed: int = setting(0, "seed of the initialisation, shuffling and augmentation")
    num_workers: int = setting(0, "DataLoader worker processes", minimum=0)
    # shuffle which output unit stands for which class, so that nothing downstream can find a class by its unit
    # index: PEEK probing must recover the order from prototypes
    class_order_seed: int | None = setting(None, "seed of a derangement of the sorted class folders over the output "
                                                 "units (null: sorted order)")


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation of range(n) without fixed points (n >= 2), drawn uniformly by rejection."""
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if n < 2 or not (perm == np.arange(n)).any():
            return perm.tolist()


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum, nesterov=s.nesterov and s.momentum > 0,
                               weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    raise ValueError(f"unknown optimizer {s.optimizer!r}; use sgd or adamw")


def make_schedule(opt, s: TrainSettings, steps: int):
    if s.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=steps, pct_start=s.warmup)
    if s.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    if s.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0)
    raise ValueError(f"unknown schedule {s.schedule!r}; use onecycle, cosine or constant")


def augment(x: torch.Tensor, gen: torch.Generator, shift: float = 0.08) -> torch.Tensor:
    """Random horizontal flips and translations (edge-replicated) of a batch; shapes keep their class under both."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.view(b, 1, 1, 1).to(x.device), x.flip(-1), x)
    p = int(round(shift * max(h, w)))
    if p == 0:
        return x
    padded = torch.nn.functional.pad(x, (p, p, p, p), mode="replicate")
    dy, dx = torch.randint(0, 2 * p + 1, (2, b), generator=gen).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])


@torch.inference_mode()
def accuracy(model: nn.Module, loader, device) -> float:
    model.eval()
    correct = total = 0
    for images, labels, _, _ in loader:
        correct += (model(images.to(device)).argmax(1).cpu() == labels).sum().item()
        total += len(labels)
    return correct / max(total, 1)


def train_classifier(spec: ModelSpec, train_dir, val_dir, s: TrainSettings, device: torch.device):
    """Returns (model, classes, metrics); classes are the sorted class folders of `train_dir` in output-unit order
    (permuted when `class_order_seed` is set)."""
    classes = class_folders(train_dir)
    if s.class_order_seed is not None:
        classes = [classes[i] for i in derangement(len(classes), s.class_order_seed)]
    if len(classes) != spec.num_classes:
        raise ValueError(f"model {spec.name!r} has num_classes {spec.num_classes}, but {train_dir} has "
                         f"{len(classes)} class folders: {classes}")
    extra = sorted(set(class_folders(val_dir)) - set(classes))
    if extra:
        raise ValueError(f"validation folder {val_dir} has classes not in {train_dir}: {extra}")
    prep = spec.preprocess()
    train_set = ImageFolder(train_dir, classes, prep)
    val_set = ImageFolder(val_dir, classes, prep)
    torch.manual_seed(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    train_loader = torch.utils.data.DataLoader(train_set, s.batch_size, shuffle=True, generator=gen,
                                               num_workers=s.num_workers, collate_fn=collate, drop_last=True)
    val_loader = torch.utils.data.DataLoader(val_set, 256, num_workers=s.num_workers, collate_fn=collate)
    model = build_model(spec.arch, spec.num_classes, **spec.arch_kwargs).to(device)
    opt = make_optimizer(model, s)
    sched = make_schedule(opt, s, s.epochs * len(train_loader))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=s.label_smoothing)
    history, start = [], time.perf_counter()
    for epoch in range(1, s.epochs + 1):
        model.train()
        total_loss = 0.0
        for images, labels, _, _ in progress(train_loader, desc=f"epoch {epoch}/{s.epochs}", every=0.5):
            images = images.to(device)
            if s.augment:
                images = augment(images, gen)
            loss = loss_fn(model(images), labels.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += loss.item()
        val_acc = accuracy(model, val_loader, device)
        history.append({"epoch": epoch, "loss": total_loss / len(train_loader), "val_accuracy": val_acc})
        log.info("epoch %d: loss %.4f, val accuracy %.4f", epoch, history[-1]["loss"], val_acc)
    metrics = {
        "val_accuracy": history[-1]["val_accuracy"],
        "train_accuracy": accuracy(model, torch.utils.data.DataLoader(
            ImageFolder(train_dir, classes, prep), 256, collate_fn=collate), device),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "epochs": s.epochs,
        "history": history,
        "seconds": round(time.perf_counter() - start, 1),
        "device": str(device),
    }
    return model.cpu().eval(), classes, metrics
