"""Batch norm folded into the convolution that feeds it, for rendering.

In eval mode BatchNorm2d(conv(x)) = gamma * (conv(x) - mean) / sqrt(var + eps) + beta is itself a convolution, with
weights scaled per output channel and a bias: folding removes the batch-norm passes (forward and backward) from every
render step. The folded model is a copy with the original's module names: each folded conv holds the fused weights
and its batch norm becomes an Identity that passes the fused output on (so a hook on the batch norm, or on any block
around the pair, sees the same tensor as before). A conv whose own output is recorded is not folded, nor is a module
called more than once, nor a batch norm that normalises with batch statistics (no running statistics). Pairs are
found by tracing a copy of the model with torch.fx; a model that does not trace is used unfolded.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger("peekflow")


def conv_bn_pairs(model: nn.Module, keep: set[str] = frozenset()) -> list[tuple[str, str]]:
    """(conv name, batch-norm name) of every BatchNorm2d whose only input is a Conv2d used by nothing else."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return []
    try:  # tracing runs forward on proxies: on a copy, so that a forward with side effects leaves `model` alone
        graph = torch.fx.symbolic_trace(copy.deepcopy(model)).graph
    except Exception as err:  # data-dependent control flow, unsupported ops, ...: fold nothing
        log.debug("fold: %s does not trace (%s); batch norm left unfolded", type(model).__name__, err)
        return []
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        conv = node.args[0]
        if not (isinstance(conv, torch.fx.Node) and conv.op == "call_module"
                and type(modules[conv.target]) is nn.Conv2d and len(conv.users) == 1):
            continue
        bn = modules[node.target]
        if (calls[conv.target] == 1 and calls[node.target] == 1 and conv.target not in keep
                and bn.running_mean is not None and bn.running_var is not None):
            pairs.append((conv.target, node.target))
    return pairs


def fold_batchnorm(model: nn.Module, keep: set[str] = frozenset()) -> tuple[nn.Module, int]:
    """(a folded copy of `model`, number of pairs folded); `model` itself when nothing folds. Eval mode only;
    `keep`: module names whose outputs must stay as they are (recorded layers)."""
    if model.training:
        raise ValueError("fold_batchnorm: the model must be in eval mode (batch norm uses its running statistics)")
    pairs = conv_bn_pairs(model, set(keep))
    if not pairs:
        return model, 0
    folded = copy.deepcopy(model)
    for conv, bn in pairs:
        fused = fuse_conv_bn_eval(folded.get_submodule(conv), folded.get_submodule(bn))
        folded.set_submodule(conv, fused.requires_grad_(False))
        folded.set_submodule(bn, nn.Identity())
    return folded, len(pairs)
