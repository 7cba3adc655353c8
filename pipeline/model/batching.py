"""Length-sorted batches with little padding, for scoring and for CPU training steps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Tokens (sequences x padded length) per forward pass. On CPU a pass of a few thousand tokens already runs the
# matmuls at full speed, and smaller batches keep padding low; on a GPU large batches are what makes it fast.
# On CPU every padding token costs as much as a real one, so batches there also stop at 10% padding.
CPU_MAX_TOKENS, CPU_MAX_BATCH, CPU_MAX_PADDING = 4096, 64, 0.1
GPU_MAX_TOKENS, GPU_MAX_BATCH, GPU_MAX_PADDING = 65536, 512, 1.0


def plan_batches(lengths: Sequence[int], max_tokens: int, max_batch: int, max_padding: float = 1.0) -> list[np.ndarray]:
    """Indices of each batch: longest first; at most `max_tokens` padded tokens, `max_batch` rows and a fraction
    `max_padding` of padding tokens per batch. A sequence longer than `max_tokens` gets a batch of its own."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(1, int(lengths[order[start]]))
        end, real = start + 1, longest
        limit = min(len(order), start + max_batch, start + max(1, max_tokens // longest))
        while end < limit:
            padded = (end - start + 1) * longest
            if padded - (real + lengths[order[end]]) > max_padding * padded:
                break
            real += int(lengths[order[end]])
            end += 1
        batches.append(order[start:end])
        start = end
    return batches
