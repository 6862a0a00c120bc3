"""Transformer layers seen as spatial maps, so every stage that reads [B,C,H,W] maps works on vision transformers.

A token layer's output [B,T,C] whose T is `prefix + gh*gw` (class / register / distillation tokens first, as in timm
and torchvision ViTs; `gh, gw` = the input's side over the patch size) becomes the map of its patch tokens
[B,C,gh,gw], the prefix tokens dropped; the patch embedding's own output (T = gh*gw, no prefix yet) likewise. Its
pooled feature (peekflow.models.layers.pool) is the class token or the mean of the patch tokens (`token_pool`: cls,
mean, or auto = what the model's head uses: timm's `global_pool` "token" -> cls, otherwise mean; torchvision's ViT ->
cls); its spatial max is over the patch tokens. Swin keeps its maps channels-last [B,H,W,C]: they are permuted.
Other outputs are left as they are ([B,T,C] without a patch grid is pooled over all T).

A unit of such a map is credited with its grid cell (size = stride = input side / grid side), not with the whole
image that attention lets it see: patches of a transformer layer are the patches its tokens embed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

TOKEN_POOLS = ("auto", "cls", "mean")


@dataclass(frozen=True)
class TokenLayout:
    prefix: int  # tokens before the patch tokens (class, register, distillation)
    patch: int  # patch side, input pixels
    pool: str  # "cls" or "mean": the pooled feature of a token layer
    channels_last: bool = False  # 4-d outputs other than convolutions' are [B,H,W,C] (Swin)


def token_layout(model: nn.Module) -> TokenLayout | None:
    """The token layout of a timm or torchvision transformer; None for a model without tokens."""
    chosen = getattr(model, "peekflow_token_pool", "auto")
    if getattr(model, "output_fmt", None) == "NHWC" or type(model).__module__.endswith("swin_transformer"):
        return TokenLayout(0, 1, "mean", channels_last=True)
    embed = getattr(model, "patch_embed", None)
    if hasattr(model, "num_prefix_tokens") and embed is not None:  # timm ViT, DeiT, EVA, ...
        auto = "cls" if getattr(model, "global_pool", "") == "token" and model.num_prefix_tokens else "mean"
        return TokenLayout(model.num_prefix_tokens, int(embed.patch_size[0]), auto if chosen == "auto" else chosen)
    if hasattr(model, "class_token") and hasattr(model, "patch_size"):  # torchvision VisionTransformer
        return TokenLayout(1, int(model.patch_size), "cls" if chosen == "auto" else chosen)
    return None


def fixed_input_side(model: nn.Module) -> int | None:
    """The input side a transformer insists on (timm's strict patch embedding, torchvision's ViT), else None."""
    embed = getattr(model, "patch_embed", None)
    if embed is not None and getattr(embed, "strict_img_size", False) and getattr(embed, "img_size", None):
        return int(embed.img_size[0])
    if hasattr(model, "class_token") and isinstance(getattr(model, "image_size", None), int):
        return model.image_size
    return None


def set_token_pool(model: nn.Module, how: str) -> nn.Module:
    if how not in TOKEN_POOLS:
        raise ValueError(f"token_pool {how!r} not in {list(TOKEN_POOLS)}")
    model.peekflow_token_pool = how
    return model


def channels_first(module: nn.Module) -> bool:
    """Modules of a channels-last model that still give [B,C,H,W]: convolutions, pools, the permute back."""
    kinds = nn.Conv2d, nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd
    return isinstance(module, kinds) or list(getattr(module, "dims", [])) == [0, 3, 1, 2]


def as_map(out: torch.Tensor, module: nn.Module, layout: TokenLayout, input_hw: tuple[int, int]) -> torch.Tensor:
    """`out` as [B,C,H,W] where it is a patch-token or channels-last map (module doc); otherwise unchanged. A token
    map carries `token_pooled` (its pooled feature, read by layers.pool) and `grid_cell` (input pixels per cell)."""
    if out.ndim == 4 and layout.channels_last and not channels_first(module):
        out = out.permute(0, 3, 1, 2)
        out.grid_cell = input_hw[0] // out.shape[2]
        return out
    if out.ndim != 3 or layout.channels_last:
        return out
    gh, gw = input_hw[0] // layout.patch, input_hw[1] // layout.patch
    prefix = out.shape[1] - gh * gw
    if prefix not in (0, layout.prefix):
        return out
    patches = out[:, prefix:]
    grid = patches.transpose(1, 2).reshape(out.shape[0], out.shape[2], gh, gw)
    grid.token_pooled = out[:, 0] if layout.pool == "cls" and prefix else patches.mean(dim=1)
    grid.grid_cell = layout.patch
    return grid


def float_act(act: torch.Tensor) -> torch.Tensor:
    """`act` in float32, keeping a token map's pooled feature and grid cell (mixed precision gives half tensors)."""
    out = act.float()
    if out is not act and getattr(act, "token_pooled", None) is not None:
        out.token_pooled, out.grid_cell = act.token_pooled.float(), act.grid_cell
    return out
