"""The listwise ranking loss, a pure function of rewards, ranks and groups (the pairwise loss is TRL's own), and the
length controls: the covariance of rewards with answer lengths, and a length-only expert for a product of experts."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def group_ranking_loss(
    rewards: torch.Tensor,
    ranks: torch.Tensor,
    group: torch.Tensor,
    use_margin: bool = False,
    offsets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean over groups of the mean over the group's ordered pairs of -log sigmoid(r_better - r_worse [- gap]).

    `offsets` (the length expert's log-odds per answer) join the rewards in the loss only. Ties (equal ranks) form
    no pair. Returns the loss, the number of pairs and the number the rewards alone rank correctly.
    """
    better = (group[:, None] == group[None, :]) & (ranks[:, None] < ranks[None, :])
    scores = rewards if offsets is None else rewards + offsets
    diff = scores[:, None] - scores[None, :]
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


def answer_lengths(input_ids: torch.Tensor, attention_mask: torch.Tensor, sep_token_id: int | None) -> torch.Tensor:
    """Answer tokens of each right-padded `[CLS] prompt [SEP] answer [SEP]` row: those between its first and last
    [SEP]; the whole row's length where there is no [SEP] (then a prompt's length counts too)."""
    total = attention_mask.sum(1)
    if sep_token_id is None:
        return total.float()
    is_sep = (input_ids == sep_token_id) & attention_mask.bool()
    first = is_sep.int().argmax(1)
    return torch.where(is_sep.any(1), total - first - 2, total).float()


def batch_correlation(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of `values` and `lengths` over the batch, differentiable in `values`; 0 when either is
    constant (no length signal to remove)."""
    v = values - values.mean()
    n = lengths - lengths.mean()
    scale = (v.pow(2).sum() * n.pow(2).sum()).sqrt()
    if scale.item() < 1e-12:
        return values.sum() * 0.0
    return (v * n).sum() / scale


def length_slope(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Covariance of `values` with the batch's standardised lengths: how far the value moves per standard deviation
    of length. Unlike the correlation, it shrinks with the values' own spread, so a penalty on it stays small while
    rewards are still near-constant (early training), where the correlation's gradient is largest and would stop
    the model from learning anything (bench/RESULTS.md, "Training defaults, length control and precision")."""
    # Equal lengths: every deviation is 0, so z and the result are 0 (no host sync, unlike a branch on the spread).
    z = (lengths - lengths.mean()) / lengths.std(unbiased=False).clamp_min(1e-12)
    return ((values - values.mean()) * z).mean()


def fit_length_expert(better: np.ndarray, worse: np.ndarray) -> float:
    """Weight w of the length-only preference model P(better wins) = sigmoid(w * (g(better) - g(worse))), with g =
    log(1 + answer tokens), by maximum likelihood (Newton's method; a weak Gaussian prior keeps w finite where length
    alone separates the pairs). 0 when no pair differs in length."""
    d = np.log1p(np.asarray(better, dtype=np.float64)) - np.log1p(np.asarray(worse, dtype=np.float64))
    w = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-w * d))
        step = ((d * (1 - p)).sum() - w) / ((d * d * p * (1 - p)).sum() + 1.0)
        w += step
        if abs(step) < 1e-10:
            break
    return float(w)


def length_expert_offsets(weight: float, lengths: torch.Tensor) -> torch.Tensor:
    """The length expert's log-odds per answer: weight * log(1 + answer tokens)."""
    return weight * torch.log1p(lengths)
