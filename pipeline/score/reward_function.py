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
    """A trained reward model as a TRL reward function (`reward_funcs` of `GRPOTrainer` and the other RL trainers).

    Called as TRL calls a reward function, `f(prompts=..., completions=..., completion_ids=..., **kwargs)`, it
    returns one float per completion, in order. Prompts and completions are text or lists of `{"role", "content"}`
    messages (rendered as in training, `pipeline.data.conversation`); `completion_ids` (the policy's tokens) are not
    used: the reward model has its own tokenizer. A completion longer than the model's `max_length` is truncated as
    in training, never an error. Under several processes each process scores its own completions on its own device
    (`device="auto"`: the process's current CUDA device, else the CPU).

    Args:
        scorer (`RewardScorer`):
            The scoring engine of the reward model.
        standardize (`bool`, *optional*, defaults to `False`):
            Return `(score - reward_mean) / reward_std` with the statistics of the training answers stored in the
            model's config.json.
        name (`str`, *optional*, defaults to `"q2_reward"`):
            The reward's name in TRL's logs (`rewards/<name>/mean`).

    Raises:
        `UserError`: `standardize=True` for a model without stored statistics, or a model trained with another
            rendering of conversations than this version's.

    Example:

    ```python
    >>> from pipeline import RewardFunction
    >>> reward = RewardFunction.from_pretrained("reward_model")
    >>> rewards = reward(prompts=["How do I boil an egg?"], completions=["9 minutes in boiling water."])
    >>> len(rewards), type(rewards[0]).__name__
    (1, 'float')
    >>> # trainer = GRPOTrainer(model=policy, reward_funcs=[reward], args=GRPOConfig(...), train_dataset=prompts)
    ```
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
        """Load a saved reward model (a directory or a Hub id) as a reward function.

        Args:
            name_or_path (`str` or `os.PathLike`):
                The model's directory (as `pipeline/train.py` saves it) or its Hub id.
            precision (`str`, *optional*, defaults to `"fp32"`):
                `RewardScorer`'s precision: `"fp32"` gives the Quick Start's scores; `"auto"` is faster.
            device (`str`, *optional*, defaults to `"auto"`):
                `"auto"`, `"cpu"`, `"cuda"` or `"cuda:N"`.
            standardize (`bool`, *optional*, defaults to `False`):
                Return standardised scores (see the class).
            name (`str`, *optional*, defaults to `"q2_reward"`):
                The reward's name in TRL's logs.
            **scorer_kwargs:
                Other `RewardScorer` arguments: `max_length`, `max_tokens`, `batch_size`, `first_token_only`.

        Returns:
            `RewardFunction`: the reward function.

        Example:

        ```python
        >>> from pipeline import RewardFunction
        >>> RewardFunction.from_pretrained("reward_model", device="cpu", name="helpfulness")
        RewardFunction('helpfulness', precision='fp32', device=cpu)
        ```
        """
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
