"""Exact pairwise accuracy of a reward model over every pair, via the `evaluate` library.

    python -m pipeline.evaluation --model DIR --data FILE [--output DIR]

TRL's logged `eval_accuracy` is a mean of per-batch means (biased when batches are uneven and under DDP), so the
number we report is computed here: every pair scored once, ties counted as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import evaluate
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pipeline.core.errors import UserError
from pipeline.evaluation.metric_modules import PAIRWISE_ACCURACY
from pipeline.evaluation.metrics import length_scores, summarize
from pipeline.model.encoding import encode_preference_pairs
from pipeline.model.first_token import check, check_rows, first_token_logits


@torch.inference_mode()
def score_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    input_ids: Sequence[list[int]],
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "scoring",
) -> np.ndarray:
    """Score encoded sequences in length-sorted batches (little padding); returns float32 scores in input order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort([len(x) for x in input_ids], kind="stable")
    scores = np.empty(len(input_ids), dtype=np.float32)
    # fp32 DistilBERT: the last layer on the first token only (pipeline.first_token), checked once on a padded batch
    # made as the batches below are (the data's first batch may need no padding).
    fp32 = next(model.parameters()).dtype == torch.float32
    fast = first_token_logits(model) if fp32 and tokenizer.pad_token_id is not None else None
    if fast is not None:
        batch = tokenizer.pad({"input_ids": check_rows(int(model.config.vocab_size))}, return_tensors="pt")
        fast = fast if check(model, fast, batch["input_ids"].to(device), batch["attention_mask"].to(device)) else None
    batches = range(0, len(order), batch_size)
    for start in tqdm(batches, desc=desc, disable=not progress, unit="batch"):
        index = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [input_ids[i] for i in index]}, return_tensors="pt")
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        logits = fast(ids, mask) if fast is not None else model(input_ids=ids, attention_mask=mask).logits
        if logits.shape[-1] != 1:
            raise UserError(f"the model has {logits.shape[-1]} outputs; a reward model has exactly one (num_labels=1)")
        scores[index] = logits[:, 0].float().cpu().numpy()
    model.train(was_training)
    return scores


def evaluate_pairs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: pd.DataFrame,
    max_length: int,
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "scoring",
) -> dict[str, Any]:
    """Exact pairwise accuracy of `model` on a frame with columns prompt, chosen, rejected."""
    if pairs.empty:
        raise UserError("no pairs to evaluate")
    encoded = encode_preference_pairs(tokenizer, pairs, max_length)
    scores = score_ids(model, tokenizer, encoded.texts.input_ids, batch_size, progress, desc)
    chosen, rejected = scores[encoded.chosen], scores[encoded.rejected]
    metric = evaluate.load(PAIRWISE_ACCURACY)
    result = metric.compute(chosen_scores=chosen.astype(np.float64), rejected_scores=rejected.astype(np.float64))
    result["truncated_pairs"] = int(encoded.truncated_pairs.sum())
    result["max_length"] = max_length
    result["chosen_scores"] = chosen.tolist()
    result["rejected_scores"] = rejected.tolist()
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The result without per-pair score lists (for printing and eval_results.json)."""
    return {k: v for k, v in result.items() if not k.endswith("_scores")}


def build_report(
    pairs: pd.DataFrame,
    result: dict[str, Any],
    untrained: dict[str, Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Headline metric plus interval, rank-gap and listwise metrics, for the model and its baselines (same pairs)."""
    chosen, rejected = np.asarray(result["chosen_scores"]), np.asarray(result["rejected_scores"])
    model = {**summarize(pairs, chosen, rejected, n_boot, seed), **summary(result)}
    baselines = {
        "longer answer wins": summarize(pairs, *length_scores(pairs, longer_wins=True), n_boot, seed),
        "shorter answer wins": summarize(pairs, *length_scores(pairs, longer_wins=False), n_boot, seed),
    }
    if untrained is not None:
        baselines["untrained base model"] = summarize(
            pairs, np.asarray(untrained["chosen_scores"]), np.asarray(untrained["rejected_scores"]), n_boot, seed
        )
    trivial = {k: v for k, v in baselines.items() if k != "untrained base model"}
    best_name = max(trivial, key=lambda k: trivial[k]["pairwise_accuracy"])
    return {
        "model": model,
        "baselines": baselines,
        "best_trivial_baseline": {"name": best_name, "pairwise_accuracy": trivial[best_name]["pairwise_accuracy"]},
    }
