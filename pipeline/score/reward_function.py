"""A trained reward model as a TRL reward function (GRPO, and every trainer that takes `reward_funcs`).

TRL scores a reward *model* by gluing prompt and completion into one string without special tokens, padding it and
never truncating it: an encoder trained here on `[CLS] prompt [SEP] answer [SEP]` then reads text it never saw,
and a long completion crashes it. As a reward *function* it is scored with the training encoding instead, through
the one scoring engine.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from pipeline.core.errors import UserError
from pipeline.data.conversation import check_format, pair_text
from pipeline.model.scorer import RewardScorer


class RewardFunction:
    """Callable as TRL calls a reward function: `f(prompts=..., completions=..., completion_ids=..., **kwargs)`,
    one float per completion, in order. Prompts and completions are text or lists of {"role", "content"} messages
    (rendered as in training, `pipeline.data.conversation`); completion_ids (the policy's tokens) are not used: the
    reward model has its own tokenizer. A completion longer than the model's max_length is truncated as in
    training, never an error.

        reward = RewardFunction.from_pretrained("reward_model")
        trainer = GRPOTrainer(model=policy, reward_funcs=[reward], ...)

    `standardize=True` returns (score - reward_mean) / reward_std with the statistics of the training answers
    stored in the model's config.json. Under several processes each process scores its own completions on its own
    device (`device="auto"`: the process's current CUDA device, else the CPU).
    """

    def __init__(self, scorer: RewardScorer, *, standardize: bool = False, name: str = "q2_reward") -> None:
        self.scorer = scorer
        self.standardize = standardize
        self.__name__ = name  # TRL names the reward in its logs by __name__
        if standardize and scorer.reward_stats is None:
            scorer.standardize([])  # raises the one-line error: the model has no reward_mean/reward_std
        check_format(getattr(scorer.model, "config", None), "reward model")

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        precision: str = "fp32",
        device: str = "auto",
        standardize: bool = False,
        name: str = "q2_reward",
        **scorer_kwargs: Any,
    ) -> RewardFunction:
        """Load a saved reward model (directory or Hub id). `precision`/`device`/`max_length`/`max_tokens`/
        `batch_size` are RewardScorer's: fp32 (default) gives the Quick Start's scores; "auto" is faster."""
        scorer = RewardScorer.from_pretrained(name_or_path, precision=precision, device=device, **scorer_kwargs)
        return cls(scorer, standardize=standardize, name=name)

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None, **kwargs: Any
    ) -> list[float]:
        if len(prompts) != len(completions):
            raise UserError(
                f"{len(prompts)} prompts but {len(completions)} completions; give one prompt per completion"
            )
        texts = [pair_text(p, c, f"completion {i}") for i, (p, c) in enumerate(zip(prompts, completions, strict=True))]
        scores = self.scorer.score([p for p, _ in texts], [a for _, a in texts], standardize=self.standardize)
        return [float(x) for x in scores]

    def __repr__(self) -> str:
        return f"RewardFunction({self.__name__!r}, precision={self.scorer.precision!r}, device={self.scorer.device})"
