"""The emergence analysis of several layers (Li, Wang, Zhang, NeurIPS 2021, "Visualizing the Emergence of Intermediate
Visual Patterns in DNNs"): per layer a sample embedding, importance weights, a regional embedding and the knowledge
points, from a feature store with spatial maps of those layers.

Order: every layer's sample embedding first; with `align`, each layer's embedding is then rotated onto the next
layer's (the last layer keeps its axes), so the figures of consecutive layers share their axes; then per layer the
importance weights, the regional embedding (pulled toward the rotated sample embedding) and the knowledge points.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from peekflow.device import resolve_device
from peekflow.emergence.data import Samples, load_layer, load_samples
from peekflow.emergence.importance import ImportanceWeights, fit_importance
from peekflow.emergence.knowledge import KnowledgePoints, knowledge_points
from peekflow.emergence.regional import RegionalEmbedding, fit_regional_embedding
from peekflow.emergence.sample import SampleEmbedding, align_rotation, fit_sample_embedding

log = logging.getLogger("peekflow.emergence")


@dataclass
class EmergenceSettings:
    per_class: int = 10  # images analysed per class (seeded subsample of the store)
    temperature: float = 4.0  # p = softmax(logits / T)
    dims: int = 3  # embedding dimensions
    grid: int = 4  # regions: every layer's map average-pooled to grid x grid cells
    sample_steps: int = 200
    sample_lr: float = 0.1
    importance_steps: int = 100
    importance_lr: float = 0.1
    kappa_target: float = 5.0  # concentration of the output similarity P_i(j)
    kappa_regions: float = 10.0  # concentration of the regional feature similarity (importance weights)
    regional_steps: int = 200
    regional_lr: float = 0.05
    lambda_kl: float = 1.0  # weight of the KL over aligned regions
    lambda_mi: float = 1.0  # weight of the mutual-information term toward the sample embedding
    align: bool = True  # rotate each layer's sample embedding onto the next layer's (orthogonal Procrustes)
    threshold: float = 0.4  # knowledge point: max_y q(y | h) >= threshold
    min_weight: float = 0.0  # and importance weight >= min_weight / regions (0: every region counts)
    seed: int = 0
    device: str = "auto"


@dataclass
class LayerResult:
    layer: str
    features: torch.Tensor  # [N, C] sample features
    sample: SampleEmbedding
    importance: ImportanceWeights
    regional: RegionalEmbedding
    region_emb: torch.Tensor  # [N, R, d]
    knowledge: KnowledgePoints


def fit_samples(store, layers: list[str], samples: Samples, s: EmergenceSettings, device) -> dict:
    """layer -> (sample features, regional features, fitted and aligned SampleEmbedding): each layer's maps are
    read from the store once."""
    fitted = {}
    for i, layer in enumerate(layers):
        features, regional = load_layer(store, layer, samples.rows, s.grid)
        features = features.to(device)
        emb = fit_sample_embedding(features, samples.probs.to(device), s.dims, s.sample_steps, s.sample_lr,
                                   seed=s.seed + i, what=f"{layer} sample embedding")
        fitted[layer] = (features, regional, emb)
    if s.align:
        for layer, after in reversed(list(zip(layers[:-1], layers[1:]))):
            features, regional, emb = fitted[layer]
            reference = fitted[after][2].embed(fitted[after][0])
            fitted[layer] = (features, regional, emb.rotated(align_rotation(emb.embed(features), reference)))
    return fitted


def analyse_layer(layer: str, features, regional, emb: SampleEmbedding, samples: Samples, s: EmergenceSettings,
                  device, seed: int) -> LayerResult:
    regional, probs = regional.to(device), samples.probs.to(device)
    weights = fit_importance(regional, probs, s.importance_steps, s.importance_lr, s.kappa_target, s.kappa_regions,
                             what=f"{layer} importance weights")
    fitted = fit_regional_embedding(regional, probs, emb.embed(features), weights.regions, weights.alignment,
                                    s.regional_steps, s.regional_lr, s.kappa_target, s.lambda_kl, s.lambda_mi,
                                    seed=seed, what=f"{layer} regional embedding")
    region_emb = fitted.embed(regional)
    points = knowledge_points(region_emb, emb.mixture, s.threshold, weights.regions, s.min_weight)
    log.info("%s: %d knowledge points of %d regions (%d toward the image's label)", layer, points.count(),
             points.mask.numel(), points.count_of(samples.labels.to(device)))
    return LayerResult(layer, features, emb, weights, fitted, region_emb, points)


def analyse(store, layers: list[str], s: EmergenceSettings):
    """Yield (samples, LayerResult) layer by layer, in the order of `layers` (shallow to deep)."""
    if not layers:
        raise ValueError("emergence: name at least one layer")
    if len(set(layers)) != len(layers):
        raise ValueError(f"emergence: layers repeat: {layers}")
    device = resolve_device(s.device)
    samples = load_samples(store, s.per_class, s.temperature, s.seed)
    log.info("emergence of %s: %d images (%d per class), layers %s", store, len(samples.rows), s.per_class, layers)
    fitted = fit_samples(store, layers, samples, s, device)
    for i, layer in enumerate(layers):
        features, regional, emb = fitted[layer]
        yield samples, analyse_layer(layer, features, regional, emb, samples, s, device, seed=s.seed + 100 + i)
