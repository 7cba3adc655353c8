"""What the trainers train on: encoded pairs as a pairwise dataset, or each prompt's answers as one ranked group
(InstructGPT's "all C(K,2) comparisons of a prompt as one batch element"), and the collator for such groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from trl.trainer.utils import pad

from pipeline.model.encoding import EncodedPairs


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


def _prompt_ranks(c: np.ndarray, r: np.ndarray, m: np.ndarray) -> dict[int, float] | None:
    """Ranks of one prompt's answers implied by its pairs (chosen c, rejected r, gaps m), or None if the pairs are
    not one consistent ranking. Ranks are relative to the first chosen answer; answers with no pair to it tie it."""
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
    return rank if consistent else None


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
        rank = _prompt_ranks(c, r, m)
        if rank is not None:
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
