"""Why a checkpoint does not fit the model a config builds, said in the config's terms.

`fit_problem(found, model, num_classes, key)` compares a checkpoint's tensor shapes with the built model's and, where
they differ, names the difference in structure and the config key that changes it:
- another kind of network ("looks like a ResNet", by key names only one family has): `<key>.arch`;
- another number of blocks in a repeated container (`blocks`: 4 in the checkpoint, 12 in the model), with the
  constructor argument that sets it where the model takes one (`<key>.arch_kwargs.depth: 4`), or the torchvision
  ResNet of the checkpoint's block counts;
- a head of another size (`<key>.num_classes`), other widths (`<key>.arch_kwargs.embed_dim`, `widths`, ...);
then the first missing, unexpected and misshapen tensors, as the raw evidence.
"""

from __future__ import annotations

import collections
import inspect
import re

from torch import nn

# what a checkpoint looks like -> a key that only that family of networks has (matched in full)
FAMILIES = [
    ("a ResNet", r"layer\d+\.\d+\.conv1\.weight"),
    ("a vision transformer (timm ViT/DeiT)", r"blocks\.\d+\.attn\.qkv\.weight"),
    ("a vision transformer (torchvision ViT)", r"encoder\.layers\.encoder_layer_\d+\.self_attention\.in_proj_weight"),
    ("a Swin transformer", r"layers\.\d+\.blocks\.\d+\.attn\.relative_position_bias_table"),
    ("a ConvNeXt", r"stages\.\d+\.blocks\.\d+\.conv_dw\.weight|features\.\d+\.\d+\.block\.0\.weight"),
    ("an EfficientNet or MobileNet", r"features\.\d+\.\d+\.block\.0\.0\.weight"),
    ("a DenseNet", r"features\.denseblock\d+\.denselayer\d+\.conv1\.weight"),
    ("a VGG (a plain stack of convolutions)", r"features\.\d+\.weight"),
    ("peekflow's small_vgg", r"block\d+\.\d+\.weight"),
]
# torchvision's ResNets by their block counts per stage and block type (conv3: bottleneck)
RESNETS = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34", ((3, 4, 6, 3), True): "resnet50",
           ((3, 4, 23, 3), True): "resnet101", ((3, 8, 36, 3), True): "resnet152"}
# constructor arguments that set a repeated container's length or a width, by what they are called
DEPTH_ARGS = ("depth", "num_layers", "blocks", "depths")
WIDTH_ARGS = ("embed_dim", "hidden_dim", "width", "widths", "dims", "embed_dims")


def family(keys) -> tuple[str, str] | None:
    """(what a state dict's keys look like, the key that says so), or None."""
    for name, pattern in FAMILIES:
        key = next((k for k in keys if re.fullmatch(pattern, k)), None)
        if key:
            return name, key
    return None


def repeats(keys) -> dict[str, int]:
    """Repeated containers and their length (largest index + 1): 'blocks' -> 12, 'layer3' -> 6,
    'stages.2.blocks' -> 9."""
    found = collections.defaultdict(set)
    for key in keys:
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if part.isdigit() and i:
                found[".".join(parts[:i])].add(int(part))
    return {container: max(indices) + 1 for container, indices in found.items()}


def resnet_of(shapes: dict) -> str | None:
    """The torchvision ResNet whose stem, block counts and block type tensors of `shapes` (name -> shape) have, or
    None."""
    if tuple(shapes.get("conv1.weight", ())) != (64, 3, 7, 7):
        return None
    counts = repeats(shapes)
    stages = tuple(counts.get(f"layer{i}", 0) for i in range(1, 5))
    return RESNETS.get((stages, "layer1.0.conv3.weight" in shapes))


def constructor_args(model: nn.Module) -> set[str]:
    try:
        return set(inspect.signature(type(model).__init__).parameters)
    except (TypeError, ValueError):
        return set()


def fit_problem(found: dict[str, tuple], model: nn.Module, num_classes: int, key: str) -> str | None:
    """Why tensors of shapes `found` (name -> shape) do not load into `model` (None: they do), naming the
    difference in structure and the key under `key` (the model's config path, e.g. models.mine) to change."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # BatchNorm fills in num_batches_tracked for checkpoints saved before it existed (torchvision's V1 weights)
    missing = sorted(k for k in set(expected) - set(found) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
    if not (missing or unexpected or shapes):
        return None
    causes = kind_of(found, expected, key)  # another kind of network: its blocks and widths say nothing more
    if not causes:
        causes = block_counts(found, expected, model, key)
        causes += head_and_widths(found, expected, shapes, model, num_classes, key, widths=not resnet_of(found))
    evidence = []
    for what, items in [("missing keys", missing), ("unexpected keys", unexpected),
                        ("shapes", [f"{k} {found[k]} != {expected[k]}" for k in shapes])]:
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            evidence.append(f"{what} {items[:3]}{more}")
    return "; ".join([*causes, ", ".join(evidence)])


def kind_of(found: dict, expected: dict, key: str) -> list[str]:
    """The checkpoint is another kind of network than the model."""
    theirs, ours = family(found), family(expected)
    if not theirs or (ours and theirs[0] == ours[0]):
        return []
    resnet = resnet_of(found) if theirs[0] == "a ResNet" else None
    which = f"; torchvision's {resnet} by its block counts" if resnet else ""
    model = f", not {ours[0]} like the model" if ours else ""
    example = f" (e.g. {resnet} or timm/{resnet})" if resnet else ""
    return [f"the checkpoint looks like {theirs[0]} (key {theirs[1]}{which}){model}: set {key}.arch to the "
            f"architecture it was saved from{example}"]


def block_counts(found: dict, expected: dict, model: nn.Module, key: str) -> list[str]:
    """Repeated containers of another length (the outermost ones that differ)."""
    theirs, ours = repeats(found), repeats(expected)
    differ = [c for c in sorted(set(theirs) & set(ours)) if theirs[c] != ours[c]]
    differ = [c for c in differ if not any(c.startswith(d + ".") for d in differ)]
    if not differ:
        return []
    shown = ", ".join(f"{theirs[c]} blocks under {c!r} where the model has {ours[c]}" for c in differ[:4])
    args = constructor_args(model)
    depth = next((a for a in DEPTH_ARGS if a in args), None)
    resnet = resnet_of(found)
    if resnet:
        fix = f"set {key}.arch to {resnet} (or timm/{resnet}), whose block counts these are"
    elif depth and len(differ) == 1:
        fix = f"set {key}.arch_kwargs.{depth}: {theirs[differ[0]]}"
    elif depth:
        fix = f"set {key}.arch_kwargs.{depth} to the checkpoint's block counts"
    else:
        fix = f"set {key}.arch to the architecture it was saved from"
    return [f"the checkpoint has {shown}: {fix}"]


def head_and_widths(found: dict, expected: dict, shapes: list[str], model: nn.Module, num_classes: int, key: str,
                    widths: bool = True) -> list[str]:
    """A classifier head of another size; (`widths`) tensors of other widths (the commonest width pair)."""
    out, pairs, head = [], collections.Counter(), None
    for k in shapes:
        a, b = found[k], expected[k]
        if len(a) == len(b) and b[0] == num_classes and a[0] != num_classes and a[1:] == b[1:] and k.endswith(
                ("weight", "bias")):
            head = a[0]
            continue
        if len(a) == len(b):
            pairs.update((x, y) for x, y in zip(a, b) if x != y)
    if head:
        out.append(f"its head has {head} outputs, the model {num_classes}: set {key}.num_classes: {head} (and its "
                   f"class names)")
    if pairs and widths:
        (theirs, ours), _ = pairs.most_common(1)[0]
        example = next(k for k in shapes if theirs in found[k] and ours in expected[k])
        arg = next((a for a in WIDTH_ARGS if a in constructor_args(model)), None)
        if arg in ("embed_dim", "hidden_dim", "width"):
            fix = f"set {key}.arch_kwargs.{arg}: {theirs}"
        elif arg:
            fix = f"set {key}.arch_kwargs.{arg} to the checkpoint's widths"
        else:
            fix = f"set {key}.arch to the architecture it was saved from"
        out.append(f"its tensors are {theirs} wide where the model's are {ours} (e.g. {example} "
                   f"{found[example]} != {expected[example]}): {fix}")
    return out
