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
from peekflow.settings import Settings, setting
from peekflow.emergence.data import Samples, load_layer, load_samples
from peekflow.emergence.importance import ImportanceWeights, fit_importance
from peekflow.emergence.knowledge import KnowledgePoints, knowledge_points
from peekflow.emergence.regional import RegionalEmbedding, fit_regional_embedding
from peekflow.emergence.sample import SampleEmbedding, align_rotation, fit_sample_embedding

log = logging.getLogger("peekflow.emergence")


@dataclass
class EmergenceSettings(Settings):
    per_class: int = setting(10, "images analysed per class (a seeded subsample of the store)", minimum=2)
    temperature: float = setting(4.0, "T of the target probabilities p = softmax(logits / T)", exclusive_minimum=0)
    dims: int = setting(3, "embedding dimensions (figures need 3)", minimum=2)
    grid: int = setting(4, "regions per layer: its map average-pooled to grid x grid cells", minimum=1)
    sample_steps: int = setting(200, "Adam steps of the sample embedding", minimum=0)
    sample_lr: float = setting(0.1, "learning rate of the sample embedding", exclusive_minimum=0)
    importance_steps: int = setting(100, "Adam steps of the importance weights", minimum=0)
    importance_lr: float = setting(0.1, "learning rate of the importance weights", exclusive_minimum=0)
    kappa_target: float = setting(5.0, "concentration of the output similarity P_i(j)", exclusive_minimum=0)
    kappa_regions: float = setting(10.0, "concentration of the regional feature similarity (importance weights)",
                                   exclusive_minimum=0)
    regional_steps: int = setting(200, "Adam steps of the regional embedding", minimum=0)
    regional_lr: float = setting(0.05, "learning rate of the regional embedding", exclusive_minimum=0)
    lambda_kl: float = setting(1.0, "weight of the KL over aligned regions", minimum=0)
    lambda_mi: float = setting(1.0, "weight of the mutual-information term toward the sample embedding", minimum=0)
    align: bool = setting(True, "rotate each layer's sample embedding onto the next layer's (Procrustes)")
    threshold: float = setting(0.4, "knowledge point: a region's class probability max_y q(y | h) >= threshold",
                               exclusive_minimum=0, maximum=1)
    min_weight: float = setting(0.0, "knowledge points also need importance weight >= min_weight / regions",
                                minimum=0)
    seed: int = setting(0, "seed of the subsample and the embeddings' starts", minimum=0)


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


def analyse(store, layers: list[str], s: EmergenceSettings, device="auto"):
    """Yield (samples, LayerResult) layer by layer, in the order of `layers` (shallow to deep)."""
    if not layers:
        raise ValueError("emergence: name at least one layer")
    if len(set(layers)) != len(layers):
        raise ValueError(f"emergence: layers repeat: {layers}")
    device = resolve_device(device)
    samples = load_samples(store, s.per_class, s.temperature, s.seed)
    log.info("emergence of %s: %d images (%d per class), layers %s", store, len(samples.rows), s.per_class, layers)
    fitted = fit_samples(store, layers, samples, s, device)
    for i, layer in enumerate(layers):
        features, regional, emb = fitted[layer]
        yield samples, analyse_layer(layer, features, regional, emb, samples, s, device, seed=s.seed + 100 + i)
