"""RewardTrainer subclasses: the stock pairwise objective with length-grouped batches and a real tokens/s log, and
the listwise `ranking` objective that encodes each answer of a prompt once (InstructGPT's "all C(K,2) comparisons
of a prompt as one batch element")."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from datasets import Dataset
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices
from trl import RewardTrainer
from trl.trainer.utils import pad

from pipeline.model.batching import LengthChunkedForward
from pipeline.model.encoding import EncodedPairs
from pipeline.training.checkpoints import COMPLETE, delete_old_checkpoints


class ThroughputMixin:
    """Adds `tokens_per_s` (real, non-padding tokens of training batches per second) to each training log."""

    _last_log: tuple[float, int] | None = None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training and "loss" in logs:
            now, tokens = time.perf_counter(), self._total_train_tokens
            if self._last_log is not None and now > self._last_log[0]:
                logs["tokens_per_s"] = round((tokens - self._last_log[1]) / (now - self._last_log[0]), 1)
            self._last_log = (now, tokens)
        super().log(logs, start_time)

    def _inner_training_loop(self, *args, **kwargs):
        self._last_log = (time.perf_counter(), self._total_train_tokens)
        return super()._inner_training_loop(*args, **kwargs)


class CompleteCheckpointMixin:
    """Marks a checkpoint complete once every process has written its part, so resume never picks a torn one.

    transformers deletes old checkpoints before we could mark the new one; with save_total_limit 1 a crash there
    would leave no complete checkpoint. So old ones are deleted here, after the marker, marker first (a crash in the
    middle of deleting leaves a folder that no longer counts, not a complete-looking one missing its optimizer).
    """

    def _save_checkpoint(self, model, trial) -> None:
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            run_dir = Path(self._get_output_dir(trial=trial))
            (run_dir / f"checkpoint-{self.state.global_step}" / COMPLETE).write_text(f"{self.state.global_step}\n")
            delete_old_checkpoints(run_dir, limit, self.state.global_step)


class EpochSeededLengthGroupedSampler(Sampler[int]):
    """transformers' length-grouped order, drawn from `seed + epoch` alone.

    The stock LengthGroupedSampler draws from the global RNG, which a resumed run restores only after it has built
    the epoch's order: a run resumed mid-epoch then skips the wrong batches (some pairs trained twice, some never).
    No `generator` attribute on purpose: accelerate would replace its state with rank 0's at every epoch.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class ResumableSamplerMixin:
    """`group_by_length` batches whose order depends only on seed and epoch (see EpochSeededLengthGroupedSampler)."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        column = self.args.length_column_name
        if (
            self.args.train_sampling_strategy == "group_by_length"
            and isinstance(dataset, Dataset)
            and column in dataset.column_names
        ):
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return EpochSeededLengthGroupedSampler(dataset[column], batch, self.args.seed)
        return super()._get_train_sampler(train_dataset)


class LengthChunkedMixin:
    """On CPU, one process: each step's forward runs as near-equal-length pieces (see LengthChunkedForward)."""

    def _reward_forward(self, model):
        wanted = getattr(self.args, "length_chunked_forward", False)  # a plain RewardConfig has no such key
        chunk = wanted and self.args.device.type == "cpu" and self.accelerator.num_processes == 1
        return LengthChunkedForward(model) if chunk else model


class PairwiseRewardTrainer(
    CompleteCheckpointMixin, ResumableSamplerMixin, ThroughputMixin, LengthChunkedMixin, RewardTrainer
):
    """Stock TRL pairwise loss; keeps our `length` column so `group_by_length` batches can use it."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return super().compute_loss(self._reward_forward(model), inputs, return_outputs, num_items_in_batch)

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", "margin", "length"]


def pairwise_dataset(encoded: EncodedPairs, margins: np.ndarray | None) -> Dataset:
    ids = encoded.texts.input_ids
    lengths = np.array([len(x) for x in ids])
    columns: dict[str, Any] = {
        "chosen_ids": [ids[i] for i in encoded.chosen],
        "rejected_ids": [ids[i] for i in encoded.rejected],
        "length": np.maximum(lengths[encoded.chosen], lengths[encoded.rejected]).tolist(),
    }
    if margins is not None:
        columns["margin"] = np.asarray(margins, dtype=np.float32).tolist()
    return Dataset.from_dict(columns)


def group_ranks(pairs: pd.DataFrame, encoded: EncodedPairs) -> tuple[list[list[int]], list[list[float]]]:
    """Per prompt: the distinct answers (as indices into encoded.texts) and ranks consistent with every pair.

    Ranks are rebuilt from the pairs' margins (rank gaps) relative to one answer of the prompt; answers with no pair
    to it are tied with it. A prompt whose pairs are not one consistent ranking (e.g. pairwise data with arbitrary
    pairs) becomes one group per pair, which is exactly the pairwise objective for those pairs.
    """
    margin = pairs["margin"].to_numpy(dtype=np.float64) if "margin" in pairs else np.ones(len(pairs))
    frame = pd.DataFrame(
        {"prompt": pairs["prompt"].to_numpy(), "c": encoded.chosen, "r": encoded.rejected, "m": margin}
    )
    groups: list[list[int]] = []
    ranks: list[list[float]] = []
    for _, g in frame.groupby("prompt", sort=False):
        c, r, m = g["c"].to_numpy(), g["r"].to_numpy(), g["m"].to_numpy()
        anchor = c[0]
        rank = {int(anchor): 0.0}
        rank.update({int(b): float(mm) for a, b, mm in zip(c, r, m, strict=True) if a == anchor})
        rank.update({int(a): -float(mm) for a, b, mm in zip(c, r, m, strict=True) if b == anchor})
        for answer in np.unique(np.concatenate([c, r])):
            rank.setdefault(int(answer), 0.0)  # no pair with the anchor: tied with it
        expected = {(int(a), int(b)) for a, b in zip(c, r, strict=True)}
        implied = {(a, b) for a in rank for b in rank if rank[a] < rank[b]}
        consistent = expected == implied and all(
            np.isclose(rank[int(b)] - rank[int(a)], mm) for a, b, mm in zip(c, r, m, strict=True)
        )
        if consistent:
            answers = sorted(rank, key=lambda a: (rank[a], a))
            low = rank[answers[0]]
            groups.append(answers)
            ranks.append([rank[a] - low + 1.0 for a in answers])
        else:
            for a, b, mm in zip(c, r, m, strict=True):
                groups.append([int(a), int(b)])
                ranks.append([1.0, 1.0 + float(mm)])
    return groups, ranks


def ranking_dataset(pairs: pd.DataFrame, encoded: EncodedPairs) -> Dataset:
    groups, ranks = group_ranks(pairs, encoded)
    ids = encoded.texts.input_ids
    return Dataset.from_dict(
        {
            "answer_ids": [[ids[i] for i in group] for group in groups],
            "ranks": ranks,
            "length": [max(len(ids[i]) for i in group) for group in groups],
        }
    )


@dataclass
class GroupCollator:
    """Flattens the answers of a batch of prompt groups into one padded batch; `group` maps answers to prompts."""

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences = [torch.tensor(ids) for example in examples for ids in example["answer_ids"]]
        return {
            "input_ids": pad(sequences, padding_value=self.pad_token_id, padding_side="right"),
            "attention_mask": pad([torch.ones_like(s) for s in sequences], padding_value=0, padding_side="right"),
            "ranks": torch.tensor([r for example in examples for r in example["ranks"]], dtype=torch.float),
            "group": torch.tensor([g for g, example in enumerate(examples) for _ in example["answer_ids"]]),
        }


def group_ranking_loss(
    rewards: torch.Tensor, ranks: torch.Tensor, group: torch.Tensor, use_margin: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean over groups of the mean over the group's ordered pairs of -log sigmoid(r_better - r_worse [- gap]).

    Ties (equal ranks) form no pair. Returns the loss, the number of pairs and the number ranked correctly.
    """
    better = (group[:, None] == group[None, :]) & (ranks[:, None] < ranks[None, :])
    diff = rewards[:, None] - rewards[None, :]
    if use_margin:
        diff = diff - (ranks[None, :] - ranks[:, None])
    pair_loss = -F.logsigmoid(diff) * better
    n_groups = int(group.max().item()) + 1
    per_group_pairs = torch.zeros(n_groups, device=rewards.device).index_add_(0, group, better.sum(1).float())
    per_group_loss = torch.zeros(n_groups, device=rewards.device, dtype=pair_loss.dtype).index_add_(
        0, group, pair_loss.sum(1)
    )
    has_pairs = per_group_pairs > 0
    loss = (per_group_loss[has_pairs] / per_group_pairs[has_pairs]).mean()
    correct = ((rewards[:, None] > rewards[None, :]) & better).sum()
    return loss, better.sum(), correct


class RankingRewardTrainer(
    CompleteCheckpointMixin, ResumableSamplerMixin, ThroughputMixin, LengthChunkedMixin, RewardTrainer
):
    """Batches are whole prompt groups; each answer is encoded once and every ordered pair of the group is a term."""

    def __init__(self, *args, use_margin: bool = False, **kwargs) -> None:
        self.use_margin = use_margin
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset  # already encoded groups; TRL's text path does not apply

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["answer_ids", "ranks", "length"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        forward = self._reward_forward(model)
        outputs = forward(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        rewards = outputs.logits[:, 0]
        loss, n_pairs, n_correct = group_ranking_loss(rewards, inputs["ranks"], inputs["group"], self.use_margin)
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        with torch.no_grad():
            counts = self.accelerator.gather_for_metrics(torch.stack([n_pairs, n_correct]).view(1, 2)).sum(0)
            self._metrics[mode]["accuracy"].append((counts[1] / counts[0].clamp(min=1)).item())
            self._metrics[mode]["mean_reward"].append(self.accelerator.gather(rewards.detach()).mean().item())
        return (loss, outputs) if return_outputs else loss
