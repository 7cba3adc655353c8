"""CPU training steps without most of their padding: a batch's forward run as near-equal-length pieces."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers.modeling_outputs import SequenceClassifierOutput

from pipeline.model.batching import CPU_MAX_BATCH, CPU_MAX_PADDING, CPU_MAX_TOKENS, plan_batches


class LengthChunkedForward:
    """Runs a reward model on a right-padded batch as length-sorted sub-batches, each padded only to its own longest.

    On CPU a padding token costs as much as a real one, and a batch of whole prompt groups (or of chosen+rejected
    pairs) mixes short and long answers; cutting it into near-equal-length pieces removes most of the padding. The
    result is the same rewards (masked positions never matter) in the batch's order, with one backward pass over
    all pieces. Only for an unwrapped model: DDP allows one forward per backward.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
        lengths = attention_mask.sum(1).tolist()
        plan = plan_batches(lengths, CPU_MAX_TOKENS, CPU_MAX_BATCH, CPU_MAX_PADDING)
        if len(plan) == 1:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        parts = []
        for index in plan:
            width = int(lengths[index[0]])  # longest first
            rows = torch.as_tensor(index, device=input_ids.device)
            out = self.model(input_ids=input_ids[rows, :width], attention_mask=attention_mask[rows, :width], **kwargs)
            parts.append(out.logits)
        inverse = torch.as_tensor(np.argsort(np.concatenate(plan)), device=input_ids.device)
        return SequenceClassifierOutput(logits=torch.cat(parts)[inverse])
