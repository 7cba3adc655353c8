"""The two objectives: each is its batches (the columns its collator reads) and its loss; all else is QRewardTrainer.

pairwise: TRL's own loss and metrics on (chosen, rejected) pairs. ranking: each prompt's answers as one group,
every answer encoded once and every ordered pair of the group a term of `group_ranking_loss`.
"""

from __future__ import annotations

from typing import Any

import torch
from typing_extensions import override

from pipeline.training.loss import group_ranking_loss
from pipeline.training.trainer import QRewardTrainer


class PairwiseRewardTrainer(QRewardTrainer):
    """Stock TRL pairwise loss; keeps our `length` column so `group_by_length` batches can use it."""

    signature_columns = ("chosen_ids", "rejected_ids", "margin", "length")

    @override
    def compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None
    ) -> Any:
        mode = "train" if self.model.training else "eval"
        lengths = self._answer_lengths(inputs)
        expert = self._length_expert(mode, lengths)
        if expert is not None:  # TRL's loss is -log sigmoid(r_chosen - r_rejected - margin): the expert goes there
            chosen, rejected = expert.chunk(2)
            inputs["margin"] = inputs.get("margin", 0.0) - (chosen - rejected)
        loss, outputs = super().compute_loss(self._reward_forward(model), inputs, True, num_items_in_batch)
        loss = loss + self._length_penalty(mode, outputs.logits[:, 0], lengths)
        return (loss, outputs) if return_outputs else loss


class RankingRewardTrainer(QRewardTrainer):
    """Batches are whole prompt groups (`GroupCollator`); each answer is encoded once and every ordered pair of the
    group is a term."""

    signature_columns = ("answer_ids", "ranks", "length")
    trl_prepares_dataset = False  # groups of token ids, built by `ranking_dataset`

    @override
    def __init__(self, *args: Any, use_margin: bool = False, **kwargs: Any) -> None:
        self.use_margin = use_margin
        super().__init__(*args, **kwargs)

    @override
    def compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None
    ) -> Any:
        mode = "train" if self.model.training else "eval"
        forward = self._reward_forward(model)
        outputs = forward(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        rewards = outputs.logits[:, 0]
        lengths = self._answer_lengths(inputs)
        loss, n_pairs, n_correct = group_ranking_loss(
            rewards, inputs["ranks"], inputs["group"], self.use_margin, self._length_expert(mode, lengths)
        )
        loss = loss + self._length_penalty(mode, rewards, lengths)
        self._count_tokens(mode, inputs["attention_mask"])
        with torch.no_grad():
            counts = self.accelerator.gather_for_metrics(torch.stack([n_pairs, n_correct]).view(1, 2)).sum(0)
            self._record(
                mode,
                accuracy=(counts[1] / counts[0].clamp(min=1)).item(),
                mean_reward=self.accelerator.gather(rewards.detach()).mean().item(),
            )
        return (loss, outputs) if return_outputs else loss
