"""Layer-wise learning-rate decay: the head at the full learning rate, each encoder layer below it at `decay` times
the one above, the embeddings lowest (Howard & Ruder 2018; Clark et al. 2020, ELECTRA)."""

from __future__ import annotations

import re

import torch

_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def layer_depths(model: torch.nn.Module) -> dict[str, int]:
    """Depth of each parameter: 0 for the embeddings, i + 1 for encoder layer i, layers + 1 for everything above
    (pooler, classifier head)."""
    names = [name for name, _ in model.named_parameters()]
    layers = [int(m.group(1)) for m in map(_LAYER.search, names) if m]
    top = max(layers, default=-1) + 2
    depths = {}
    for name in names:
        match = _LAYER.search(name)
        depths[name] = int(match.group(1)) + 1 if match else 0 if "embeddings" in name else top
    return depths


def with_layer_decay(optimizer: torch.optim.Optimizer, model: torch.nn.Module, decay: float) -> torch.optim.Optimizer:
    """The optimizer (before its first step), its groups (weight decay and all) split by depth in place, the
    learning rate of depth d scaled by decay ** (top - d)."""
    depths = layer_depths(model)
    top = max(depths.values())
    depth_of = {id(p): depths[name] for name, p in model.named_parameters()}
    groups = []
    for group in optimizer.param_groups:
        settings = {k: v for k, v in group.items() if k != "params"}
        by_depth: dict[int, list[torch.nn.Parameter]] = {}
        for p in group["params"]:
            by_depth.setdefault(depth_of.get(id(p), top), []).append(p)
        for depth, params in sorted(by_depth.items()):
            groups.append({**settings, "params": params, "lr": settings["lr"] * decay ** (top - depth)})
    optimizer.param_groups = []
    for group in groups:
        optimizer.add_param_group(group)
    return optimizer
