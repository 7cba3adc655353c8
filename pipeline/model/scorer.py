"""Score many (prompt, response) pairs with a saved reward model: batched, exact by default.

    python -m pipeline.score --model DIR --input FILE --output FILE [--rank] [--standardize] [--precision auto]

Every pair is encoded with the training encoding (`pipeline.model.encoding.encode_pairs`, i.e. the Quick Start call
`tokenizer(prompt, response, truncation=True, max_length=512)`), then scored in length-sorted batches under
`torch.inference_mode`. `precision="fp32"` (the default) gives the Quick Start's scores (within float32 rounding);
`"bf16"`, `"fp16"` and `"auto"` trade a little precision for speed (see bench/RESULTS.md, "Scoring speed").
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.core.errors import UserError
from pipeline.core.precision import cpu_has_native_bf16
from pipeline.model.batching import (
    CPU_MAX_BATCH,
    CPU_MAX_PADDING,
    CPU_MAX_TOKENS,
    GPU_MAX_BATCH,
    GPU_MAX_PADDING,
    GPU_MAX_TOKENS,
    plan_batches,
)

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from pipeline.model.encoding import Encoded

# pipeline.model.encoding / pipeline.model.loading (transformers) are imported where used, so that the CLI answers a
# bad file or column in a moment instead of after loading them. RewardScorer needs no datasets, evaluate or trl (the
# CLI reads CSV/TSV/Parquet through the data step, which uses datasets).

PRECISIONS = ("fp32", "bf16", "fp16", "auto")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Pairs encoded at a time (bounds memory); batches are length-sorted within a chunk, so chunks are large. On a GPU
# the next chunk is encoded while the GPU scores this one (bench/score_speed.py --chunk_sizes measures smaller ones).
CHUNK_SIZE = 16384


@dataclass
class _Pending:
    """A chunk whose batches have been launched: the scores of each batch (row indices, values), maybe on their way
    back from the GPU until `done` fires."""

    input_ids: Sequence[list[int]]
    offset: int
    batches: list[tuple[np.ndarray, torch.Tensor]]
    done: torch.cuda.Event | None  # None: computed synchronously, and already counted by the progress bar
    planned: int = 0  # batches in the chunk's plan, this shard's or not


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto`: the CUDA GPU when there is one, else the CPU. A CUDA device gets its index (the current GPU for plain
    `cuda`), so the scorer's streams and events stay on one GPU whatever becomes current later."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise UserError(f"device must be auto, cpu, cuda or cuda:N (got {device!r})") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} was asked for but no CUDA GPU is available; use --device cpu or auto")
    if resolved.type == "cuda":
        if resolved.index is None:
            return torch.device("cuda", torch.cuda.current_device())
        if resolved.index >= torch.cuda.device_count():
            raise UserError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA GPU(s) (cuda:0 ...)")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto`: fp16 autocast on a CUDA GPU (as fast as bf16 there, with 8x finer rounding, so it keeps more pairwise
    decisions); bf16 on a CPU with bf16 hardware (faster than fp32 there, and the scorer's fp32 last layer and head
    keep its decisions); fp32 on other CPUs (bf16 and fp16 are emulated there and slower than fp32). Measurements:
    bench/RESULTS.md, "Scoring speed"."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError("this GPU does not support bf16; use precision fp16 or fp32")
    return precision


class RewardScorer:
    """Scores (prompt, response) pairs with a one-label sequence-classification reward model, in input order.

    Each pair is encoded as in training (`pipeline.model.encoding.encode_pairs`) and scored in length-sorted batches
    under `torch.inference_mode`. Most users call `RewardScorer.from_pretrained`; the constructor takes a model
    already loaded (how training and evaluation score the model they hold).

    Args:
        model (`PreTrainedModel`):
            A sequence-classification model with one output (`num_labels=1`).
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer; its truncation side is the one training saved.
        precision (`str`, *optional*, defaults to `"fp32"`):
            `"fp32"` (exact: the Quick Start's scores); `"fp16"` or `"bf16"` (autocast: faster on GPUs and on CPUs
            with such hardware, scores differ from fp32 by rounding; a batch that overflows fp16 is redone in fp32;
            with the first-token path the last layer's first token and the head stay fp32); `"auto"` (fp16 on a
            CUDA GPU, bf16 on a CPU with bf16 hardware, else fp32).
        device (`str`, `torch.device` or `None`, *optional*, defaults to `"auto"`):
            `"auto"` (CUDA if available, else CPU), `"cpu"`, `"cuda"` or `"cuda:N"`; the model is moved there with
            fp32 weights. `None`: score the model in place, on its device and in its dtype, without copying or
            casting it (autocast only over fp32 weights).
        max_length (`int`, *optional*):
            Tokens per pair at most; longer pairs are truncated as in training. Defaults to the tokenizer's
            `model_max_length`, at most the model's positions.
        max_tokens (`int`, *optional*):
            Padded tokens per forward pass at most; defaults by device.
        batch_size (`int`, *optional*):
            Sequences per forward pass at most; defaults by device.
        first_token_only (`bool`, *optional*, defaults to `True`):
            For DistilBERT, run the last layer for the first token only (the head reads nothing else: same scores,
            fewer FLOPs; checked once against the model's forward). `False`: the model's own forward.

    Raises:
        `UserError`: a device, precision or batch setting this machine cannot run, with one line saying why.

    Example:

    ```python
    >>> from pipeline import RewardScorer
    >>> scorer = RewardScorer.from_pretrained("reward_model")  # fp32: the Quick Start's scores
    >>> scores = scorer.score(["How do I boil an egg?"] * 2, ["9 minutes in boiling water.", "Fry it."])
    >>> scores.shape, scores.dtype
    ((2,), dtype('float64'))
    ```
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        precision: str = "fp32",
        device: str | torch.device | None = "auto",
        max_length: int | None = None,
        max_tokens: int | None = None,
        batch_size: int | None = None,
        first_token_only: bool = True,
    ) -> None:
        in_place = device is None
        weights = next(model.parameters())
        self.device = weights.device if in_place else resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        if in_place and self.precision != "fp32" and weights.dtype != torch.float32:
            # Autocast over fp32 weights leaves the model as it is; low-precision weights are scored as they are.
            raise ValueError("a low-precision model scored in place (device=None) keeps its dtype: use 'fp32'")
        self.tokenizer = tokenizer
        self.model = (model if in_place else model.to(device=self.device, dtype=torch.float32)).eval()
        # The first-token check compares at fp32 tolerance; a low-precision model keeps its own forward.
        first_token_only = first_token_only and (not in_place or weights.dtype == torch.float32)
        from pipeline.model.loading import default_max_length

        self.max_length = int(max_length or default_max_length(model, tokenizer))
        gpu = self.device.type == "cuda"
        self.max_tokens = int(max_tokens or (GPU_MAX_TOKENS if gpu else CPU_MAX_TOKENS))
        self.batch_size = int(batch_size or (GPU_MAX_BATCH if gpu else CPU_MAX_BATCH))
        self.max_padding = GPU_MAX_PADDING if gpu else CPU_MAX_PADDING
        self.chunk_size = CHUNK_SIZE
        if self.max_tokens < 1 or self.batch_size < 1:
            raise UserError("max_tokens and batch_size must be at least 1")
        self.pad_id = tokenizer.pad_token_id
        module = sys.modules.get(type(getattr(self.model, "base_model", self.model)).__module__)
        self._mask_4d = getattr(getattr(model, "config", None), "_attn_implementation", None) == "sdpa" and hasattr(
            module, "create_bidirectional_mask"
        )
        from transformers import PreTrainedModel

        self._mask_optional = isinstance(self.model, PreTrainedModel)  # any other module always gets its mask
        if self.pad_id is None:  # no padding token: one sequence per forward pass (still exact)
            self.batch_size = 1
        from pipeline.model.first_token import check, check_rows, first_token_logits

        # The last layer for the first token only (the head reads nothing else): same scores, fewer FLOPs.
        fast = first_token_logits(self.model) if first_token_only else None
        if fast is not None:  # checked once against the model's forward, on a padded batch made as for scoring
            rows = check_rows(int(self.model.config.vocab_size))
            fast = fast if check(self.model, fast, *self._batch(rows, np.arange(2))) else None
        self._first_token = fast is not None
        self._logits: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] = (
            fast if self._first_token else self._model_logits
        )

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **kwargs: Any) -> RewardScorer:
        """Load a saved reward model (a directory or a Hub id) and its tokenizer, and make a scorer of it.

        Args:
            name_or_path (`str` or `os.PathLike`):
                The model's directory (as `pipeline/train.py` saves it) or its Hub id.
            **kwargs:
                The constructor's keyword arguments: `precision`, `device`, `max_length`, `max_tokens`,
                `batch_size`, `first_token_only`.

        Returns:
            `RewardScorer`: the scorer, its model in eval mode on `device`.

        Raises:
            `UserError`: the model is missing, has no tokenizer, or has `num_labels != 1`.

        Example:

        ```python
        >>> from pipeline import RewardScorer
        >>> scorer = RewardScorer.from_pretrained("reward_model", precision="fp32", device="cpu")
        >>> scorer.precision, str(scorer.device)
        ('fp32', 'cpu')
        ```
        """
        from pipeline.model.loading import load_reward_model

        model, tokenizer = load_reward_model(os.fspath(name_or_path))
        return cls(model, tokenizer, **kwargs)

    # -- reward statistics stored by training ------------------------------------------------------------------

    @property
    def reward_stats(self) -> tuple[float, float] | None:
        """The statistics of the training answers' scores that training stores in the model's config.json.

        Returns:
            `tuple[float, float]` or `None`: `(reward_mean, reward_std)`, or `None` when the model has none (or a
            standard deviation that is not positive).

        Example:

        ```python
        >>> from pipeline import RewardScorer
        >>> mean, std = RewardScorer.from_pretrained("reward_model").reward_stats  # a model trained here
        >>> std > 0
        True
        ```
        """
        mean = getattr(self.model.config, "reward_mean", None)
        std = getattr(self.model.config, "reward_std", None)
        if mean is None or std is None or not float(std) > 0:
            return None
        return float(mean), float(std)

    def standardize(self, scores: np.ndarray) -> np.ndarray:
        """Standardise scores with the statistics of the training answers: `(score - reward_mean) / reward_std`.

        Args:
            scores (`np.ndarray` or a sequence of floats):
                Scores of this model.

        Returns:
            `np.ndarray`: the standardised scores, float64, in the same order.

        Raises:
            `UserError`: the model has no `reward_mean`/`reward_std` in its config.json (see `reward_stats`).

        Example:

        ```python
        >>> from pipeline import RewardScorer
        >>> scorer = RewardScorer.from_pretrained("reward_model")
        >>> mean, std = scorer.reward_stats
        >>> round(float(scorer.standardize([mean + std])[0]), 6)
        1.0
        ```
        """
        stats = self.reward_stats
        if stats is None:
            raise UserError(
                "the model has no reward_mean/reward_std in its config.json (models trained by pipeline/train.py "
                "store them); score without standardising"
            )
        return (np.asarray(scores, dtype=np.float64) - stats[0]) / stats[1]

    # -- scoring -----------------------------------------------------------------------------------------------

    def encode(self, prompts: Sequence[str], responses: Sequence[str]) -> Encoded:
        """The training encoding of each pair (token ids, and which pairs were truncated)."""
        from pipeline.model.encoding import encode_pairs

        return encode_pairs(self.tokenizer, list(prompts), list(responses), self.max_length)

    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        *,
        standardize: bool = False,
        progress: bool = False,
        return_truncated: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Score each (prompt, response) pair: one score per pair, in input order.

        Pairs are encoded and scored `chunk_size` at a time, so memory stays bounded for any number of pairs. On a
        GPU the next chunk is encoded while the GPU still scores the previous one (its kernels run asynchronously
        until the scores are read back), so tokenization and the model overlap.

        Args:
            prompts (`Sequence[str]`):
                The prompts, one per response.
            responses (`Sequence[str]`):
                The responses to score, as many as `prompts`.
            standardize (`bool`, *optional*, defaults to `False`):
                Return `(score - reward_mean) / reward_std` (see `standardize`).
            progress (`bool`, *optional*, defaults to `False`):
                Show a progress bar.
            return_truncated (`bool`, *optional*, defaults to `False`):
                Also return which pairs were longer than `max_length` (and truncated as in training).
            shard (`tuple[int, int]`, *optional*, defaults to `(0, 1)`):
                `(rank, processes)`: score only every `processes`-th batch from the `rank`-th (other rows are NaN),
                for scoring on several processes: the batches are the ones one process makes, so merging the shards
                gives the one-process scores bit for bit.

        Returns:
            `np.ndarray`: the float64 scores; with `return_truncated`, a tuple `(scores, truncated)` whose second
            element is a bool array.

        Raises:
            `ValueError`: `prompts` and `responses` differ in length.

        Example:

        ```python
        >>> from pipeline import RewardScorer
        >>> scorer = RewardScorer.from_pretrained("reward_model")
        >>> prompts = ["How do I boil an egg?"] * 2
        >>> scores, truncated = scorer.score(prompts, ["9 minutes in boiling water.", "Fry it."], return_truncated=True)
        >>> len(scores), truncated.tolist()
        (2, [False, False])
        ```
        """
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        bar = tqdm(total=len(prompts), desc="scoring", unit="seq", disable=not progress)
        scores, truncated = self._score_chunks(prompts, responses, bar, shard)
        bar.close()
        if standardize:
            scores = self.standardize(scores)
        return (scores, truncated) if return_truncated else scores

    def _score_chunks(
        self, prompts: Sequence[str], responses: Sequence[str], bar: tqdm, shard: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The scores (NaN for other shards' rows) and truncation flags of every pair, `chunk_size` pairs at a time."""
        n = len(prompts)
        size = self.chunk_size
        chunks = ((prompts[i : i + size], responses[i : i + size]) for i in range(0, n, size))
        scored = list(self.score_stream(chunks, shard=shard, bar=bar))
        if not scored:
            return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=bool)
        return np.concatenate([s for s, _ in scored]), np.concatenate([t for _, t in scored])

    def score_stream(
        self,
        chunks: Iterable[tuple[Sequence[str], Sequence[str]]],
        *,
        shard: tuple[int, int] = (0, 1),
        bar: tqdm | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Score chunks of (prompts, responses) as they come, yielding each chunk's raw scores (NaN for other shards'
        rows) and truncation flags, in order; memory holds two chunks. Batches are planned within a chunk, so chunks
        of `chunk_size` pairs give exactly the scores `score` gives the whole input. Each chunk is encoded and
        launched before the previous one's scores are collected (on a GPU, tokenization overlaps the model)."""
        bar = bar if bar is not None else tqdm(disable=True)
        batch_number = 0
        pending: tuple[_Pending, np.ndarray, np.ndarray] | None = None
        for prompts, responses in chunks:
            if len(prompts) != len(responses):
                raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
            encoded = self.encode(prompts, responses)
            launched = self._launch(encoded.input_ids, 0, bar, shard, batch_number)
            batch_number += launched.planned
            if pending is not None:
                yield self._collected(pending, bar)
            pending = (launched, np.full(len(prompts), np.nan, dtype=np.float64), np.asarray(encoded.truncated, bool))
        if pending is not None:
            yield self._collected(pending, bar)

    def _collected(self, pending: tuple[_Pending, np.ndarray, np.ndarray], bar: tqdm) -> tuple[np.ndarray, np.ndarray]:
        launched, scores, truncated = pending
        self._collect(launched, scores, bar)
        return scores, truncated

    def score_pairs(self, pairs: Iterable[tuple[str, str]], **kwargs: Any) -> np.ndarray:
        """Score (prompt, response) tuples: `score` for pairs given together.

        Args:
            pairs (`Iterable[tuple[str, str]]`):
                The (prompt, response) pairs.
            **kwargs:
                `score`'s keyword arguments (`standardize`, `progress`, `return_truncated`, `shard`).

        Returns:
            `np.ndarray`: one float64 score per pair, in input order (as `score` returns it).

        Example:

        ```python
        >>> from pipeline import RewardScorer
        >>> scorer = RewardScorer.from_pretrained("reward_model")
        >>> pairs = [("How do I boil an egg?", "9 minutes in boiling water."), ("How do I boil an egg?", "Fry it.")]
        >>> bool((scorer.score_pairs(pairs) == scorer.score(*zip(*pairs))).all())
        True
        ```
        """
        pairs = list(pairs)
        return self.score([p for p, _ in pairs], [r for _, r in pairs], **kwargs)

    def __call__(self, prompt: str, response: str) -> float:
        return float(self.score([prompt], [response])[0])

    def score_ids(self, input_ids: Sequence[list[int]], progress: bool = False, desc: str = "scoring") -> np.ndarray:
        """Scores of already encoded sequences, in input order."""
        scores = np.empty(len(input_ids), dtype=np.float64)
        bar = tqdm(total=len(input_ids), desc=desc, unit="seq", disable=not progress)
        self._collect(self._launch(input_ids, 0, bar), scores, bar)
        bar.close()
        return scores

    def _batch(self, input_ids: Sequence[list[int]], index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Right-padded ids and attention mask of the rows `index` (longest first), on the scorer's device."""
        lengths = np.fromiter((len(input_ids[i]) for i in index), dtype=np.int64, count=len(index))
        flat = np.fromiter(
            itertools.chain.from_iterable(input_ids[i] for i in index), dtype=np.int64, count=int(lengths.sum())
        )
        mask = np.arange(lengths[0])[None, :] < lengths[:, None]  # right padding: positions as unpadded
        ids = np.full(mask.shape, self.pad_id or 0, dtype=np.int64)
        ids[mask] = flat  # row-major order: row by row, each row's tokens in order
        ids, mask = torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))
        if self.device.type == "cuda":  # pinned + non_blocking: a pageable copy would wait for the GPU to idle
            ids, mask = (
                ids.pin_memory().to(self.device, non_blocking=True),
                mask.pin_memory().to(self.device, non_blocking=True),
            )
        else:
            ids, mask = ids.to(self.device), mask.to(self.device)
        # transformers reads a 2D mask back (`mask.all()`) to decide whether SDPA may skip it: on a GPU that waits
        # for every batch queued before. Known here instead: no padding, no mask; else the 4D key-padding mask that
        # its SDPA path builds, which models using create_bidirectional_mask take as it is.
        if lengths[-1] == lengths[0] and self._mask_optional:
            return ids, None
        return ids, mask[:, None, None, :].bool() if self._mask_4d else mask

    @torch.inference_mode()
    def _launch(
        self, input_ids: Sequence[list[int]], offset: int, bar: tqdm, shard: tuple[int, int] = (0, 1), first: int = 0
    ) -> _Pending:
        """Run the model over length-sorted batches of `input_ids` (this shard's: batch `first + i` belongs to rank
        `(first + i) % processes`). On CPU the scores are ready on return; on a GPU they are copied back
        asynchronously and `_collect` waits for them."""
        lengths = [len(x) for x in input_ids]
        gpu = self.device.type == "cuda"
        batches = []
        plan = plan_batches(lengths, self.max_tokens, self.batch_size, self.max_padding)
        rank, processes = shard
        for number, index in enumerate(plan, start=first):
            if number % processes != rank:
                bar.update(len(index))  # another process scores it
                continue
            ids, mask = self._batch(input_ids, index)
            with self._autocast():
                logits = self._logits(ids, mask)
            if logits.shape[-1] != 1:
                raise UserError(f"the model has {logits.shape[-1]} outputs; a reward model has exactly one")
            out = logits[:, 0].float()
            if gpu:
                host = torch.empty(out.shape, dtype=torch.float32, pin_memory=True)
                batches.append((index, host.copy_(out, non_blocking=True)))
            else:
                batches.append((index, out.cpu()))
                bar.update(len(index))
        done = None
        if gpu:
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(self.device))
        return _Pending(input_ids, offset, batches, done, len(plan))

    @torch.inference_mode()
    def _collect(self, pending: _Pending, scores: np.ndarray, bar: tqdm) -> None:
        """Wait for a launched chunk and write its scores; a batch that overflowed fp16 is scored again in fp32."""
        if pending.done is not None:
            pending.done.synchronize()
        for index, out in pending.batches:
            batch = out.numpy()
            if self.precision != "fp32" and not np.isfinite(batch).all():
                ids, mask = self._batch(pending.input_ids, index)
                batch = self._logits(ids, mask)[:, 0].float().cpu().numpy()
            scores[pending.offset + index] = batch
            if pending.done is not None:
                bar.update(len(index))

    def _model_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision in AUTOCAST:
            return torch.autocast(self.device.type, dtype=AUTOCAST[self.precision])
        return contextlib.nullcontext()
