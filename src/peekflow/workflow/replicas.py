"""Replicas: one model trained with several seeds, or given as several checkpoints of the same architecture, becomes
one model per replica, each with all its own outputs (results/.../<model>@s<seed>/..., <model>@r<i>/...).

`expand(config)` rewrites a validated config in place: `models.<m>.train.seeds: [1, 2, 3]` -> models `<m>@s1`,
`<m>@s2`, `<m>@s3` (train.settings.seed set to each); `models.<m>.checkpoint: [a.pt, b.pt]` -> `<m>@r1`, `<m>@r2`;
`target_models` (or the single `target_model`) lists the replicas in place of `<m>`. `base(name)` is the model a
replica came from: the summaries over seeds group by it (peekflow.summary, which reads the names it writes).
"""

from __future__ import annotations

import copy

from peekflow.summary import SEP, base


def replicas_of(name: str, spec: dict) -> dict[str, dict]:
    """Replica name -> its model spec (a single entry, the model itself, when it is not replicated)."""
    seeds = (spec.get("train") or {}).get("seeds")
    checkpoints = spec.get("checkpoint")
    if seeds:
        out = {}
        for seed in seeds:
            replica = copy.deepcopy(spec)
            replica["train"].pop("seeds")
            replica["train"]["settings"] = {**replica["train"].get("settings", {}), "seed": seed}
            out[f"{name}{SEP}s{seed}"] = replica
        return out
    if isinstance(checkpoints, list):
        return {f"{name}{SEP}r{i}": {**spec, "checkpoint": path} for i, path in enumerate(checkpoints, 1)}
    return {name: spec}


def target_names(config: dict) -> list[str]:
    """The target models as the config names them (before expansion)."""
    return list(config.get("target_models") or [config["target_model"]])


def expand(config: dict) -> dict:
    """Replace replicated models by their replicas and list every target replica in `target_models`."""
    names = {name: replicas_of(name, spec) for name, spec in config["models"].items()}
    config["target_models"] = [r for t in target_names(config) for r in names.get(t, {t: None})]
    config.pop("target_model", None)
    config["models"] = {r: spec for replicas in names.values() for r, spec in replicas.items()}
    return config
