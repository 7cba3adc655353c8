"""CPU training under bf16 autocast: attention in fp32, everything else as autocast decides.

PyTorch's CPU flash-attention backward is slower in bf16 than in fp32 at DistilBERT's head size, while bf16 matmuls
are much faster, so bf16 training on CPU gains most with fp32 attention (bench/RESULTS.md, "Precision and whole-run
time"). Registered through transformers' attention and mask interfaces under its own name by `register`, which the
training loop calls when it switches it on (importing this module changes nothing in transformers), and on for the
loop only: the saved config never records it (`_attn_implementation` is not serialised) and evaluation after
training sees plain SDPA again. Elsewhere (GPUs, fp32 tensors) it is SDPA itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "q2_sdpa_fp32_on_cpu"


def sdpa_fp32_on_cpu(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SDPA; on CPU with low-precision inputs, computed in fp32 and returned in the inputs' dtype."""
    if query.device.type != "cpu" or query.dtype == torch.float32:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    with torch.autocast("cpu", enabled=False):
        output, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return output.to(query.dtype), weights


@cache
def register() -> str:
    """Make `NAME` a transformers attention implementation (once per process; later calls do nothing). Its name."""
    AttentionInterface.register(NAME, sdpa_fp32_on_cpu)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the same masks as SDPA (an unregistered name would get none)
    return NAME


@contextmanager
def fp32_attention_on_cpu(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Within the block, `model`'s SDPA attention runs as `sdpa_fp32_on_cpu`; other implementations are left alone."""
    config = getattr(model, "config", None)
    if (
        not enabled
        or getattr(config, "_attn_implementation", None) != "sdpa"
        or not hasattr(model, "set_attn_implementation")
    ):
        yield
        return
    model.set_attn_implementation(register())
    try:
        yield
    finally:
        model.set_attn_implementation("sdpa")
