"""A DistilBERT reward model's logits with its last layer computed for the first token only: same scores, fewer FLOPs.

The classification head reads only the first token's final hidden state. The last layer still needs every token's
key and value, but its query, attention output, feed-forward and layer norms matter for the first token alone, so
part of the last layer's work is skipped (measured in bench/RESULTS.md, "Scoring speed"). The model's own
modules do all the work; only the order of the calls is restated here, so `first_token_logits` returns None (use
the model's forward) for anything else than DistilBertForSequenceClassification under SDPA or eager attention, and
`check` compares both ways once on the model itself, so a future transformers release that changes the block cannot
silently change scores.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable
from functools import partial

import torch

logger = logging.getLogger(__name__)

Logits = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
# Largest difference from the model's own forward accepted by `check` (float32 rounding is ~1e-6 here).
CHECK_TOLERANCE = 1e-4
CHECK_RTOL = 1e-5
# What is used from the DistilBERT modeling module, so that the mask and attention are made exactly as it does.
_MODULE_NAMES = ("create_bidirectional_mask", "ALL_ATTENTION_FUNCTIONS", "eager_attention_forward")


def first_token_logits(model: torch.nn.Module) -> Logits | None:
    """`logits(input_ids, attention_mask)` for `model` computed first-token-only, or None where not supported."""
    from transformers import DistilBertForSequenceClassification

    if type(model) is not DistilBertForSequenceClassification:  # a subclass may change the forward
        return None
    if getattr(model.config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return None
    # A forward replaced on the instance (Accelerate's autocast wrapper after mixed-precision training) or a hooked
    # module (device maps, offloading) does more than the modules' own calls restated here.
    if "forward" in vars(model) or "_original_forward" in vars(model):
        return None
    if any(hasattr(m, "_hf_hook") or m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
        return None
    module = sys.modules.get(type(model.distilbert).__module__)
    if not all(hasattr(module, name) for name in _MODULE_NAMES):
        return None
    # The mask builder's embeddings keyword was `input_embeds` in transformers 5.0-5.1, `inputs_embeds` since.
    parameters = inspect.signature(module.create_bidirectional_mask).parameters
    embeds = next((name for name in ("inputs_embeds", "input_embeds") if name in parameters), None)
    if embeds is None:
        return None
    return partial(_logits, model, module, embeds)


def _logits(model, module, embeds: str, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """DistilBertForSequenceClassification.forward (eval mode) up to the logits, last block on the first token."""
    base = model.distilbert
    hidden = base.embeddings(input_ids)
    mask = module.create_bidirectional_mask(config=base.config, attention_mask=attention_mask, **{embeds: hidden})
    *layers, last = base.transformer.layer
    for layer in layers:
        hidden = layer(hidden, mask)
    first = _first_token_block(last, hidden, mask, module)  # in the weights' precision, even under autocast
    with torch.autocast(hidden.device.type, enabled=False):  # and so is the head, for the same reason
        pooled = torch.relu(model.pre_classifier(first[:, 0]))
        return model.classifier(model.dropout(pooled))


def _first_token_block(block, hidden: torch.Tensor, mask: torch.Tensor | None, module) -> torch.Tensor:
    """TransformerBlock.forward for the query of position 0 only: (batch, 1, dim)."""
    attention = block.attention
    batch = hidden.shape[0]

    def heads(x: torch.Tensor) -> torch.Tensor:  # (batch, length, dim) -> (batch, heads, length, head_size)
        return x.view(batch, x.shape[1], -1, attention.attention_head_size).transpose(1, 2)

    key, value = heads(attention.k_lin(hidden)), heads(attention.v_lin(hidden))
    if mask is not None and mask.dim() == 4 and mask.shape[-2] > 1:  # (batch, 1, length, length): row 0 only
        mask = mask[:, :, :1, :]
    # As the model picks it (`get_interface` only exists since transformers 5.2): eager is the module's own function.
    implementation = attention.config._attn_implementation
    if implementation == "eager":
        attend = module.eager_attention_forward
    else:
        attend = module.ALL_ATTENTION_FUNCTIONS[implementation]
    # Under fp16/bf16 autocast, the rest runs in the weights' precision (fp32): it is one token per sequence, so it
    # costs next to nothing on any device, and its rounding would land directly on the score (it keeps more pairwise
    # decisions equal to fp32's: bench/RESULTS.md, "Scoring speed").
    dtype = attention.q_lin.weight.dtype
    with torch.autocast(hidden.device.type, enabled=False):
        first = hidden[:, :1].to(dtype)
        query = heads(attention.q_lin(first))
        output, _ = attend(
            attention, query, key.to(dtype), value.to(dtype), mask, dropout=0.0, scaling=attention.scaling
        )
        output = attention.out_lin(output.reshape(batch, 1, -1))
        first = block.sa_layer_norm(output + first)
        # ff_chunk: the feed-forward without `chunk_size_feed_forward` chunking (it needs a length divisible by it).
        feed_forward = getattr(block.ffn, "ff_chunk", block.ffn)
        return block.output_layer_norm(feed_forward(first) + first)


def check_rows(vocab_size: int) -> list[list[int]]:
    """Two token-id rows of different lengths: batched, they need padding, which is what `check` must cover."""
    return [[i % vocab_size for i in range(9)], [i % vocab_size for i in range(5)]]


@torch.inference_mode()
def check(model: torch.nn.Module, logits: Logits, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> bool:
    """Whether `logits` gives the model's own logits on this batch (eval mode); logs a warning if not.

    Any error from the fast path (a transformers release that changed what it calls) also means "use the forward".
    """
    expected = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    try:
        got = logits(input_ids, attention_mask).float()
    except Exception as error:  # noqa: BLE001 - any failure here only means the model's own forward is used
        name = type(error).__name__
        logger.warning("first-token scoring failed (%s: %s); scoring with the full forward", name, error)
        return False
    if got.shape == expected.shape and torch.allclose(got, expected, atol=CHECK_TOLERANCE, rtol=CHECK_RTOL):
        return True
    logger.warning("first-token scoring differs from %s's forward here; scoring with the full forward", type(model))
    return False
