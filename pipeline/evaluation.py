"""Exact pairwise accuracy of a reward model over every pair, via the `evaluate` library.

    python -m pipeline.evaluation --model DIR --data FILE [--output DIR]

TRL's logged `eval_accuracy` is a mean of per-batch means (biased when batches are uneven and under DDP), so the
number we report is computed here: every pair scored once, ties counted as wrong.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import evaluate
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pipeline.encoding import encode_preference_pairs
from pipeline.errors import UserError, cli_entry
from pipeline.metrics import PAIRWISE_ACCURACY


@torch.inference_mode()
def score_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    input_ids: Sequence[list[int]],
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Score encoded sequences in length-sorted batches (little padding); returns float32 scores in input order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = np.argsort([len(x) for x in input_ids], kind="stable")
    scores = np.empty(len(input_ids), dtype=np.float32)
    batches = range(0, len(order), batch_size)
    for start in tqdm(batches, desc="scoring", disable=not progress, unit="batch"):
        index = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [input_ids[i] for i in index]}, return_tensors="pt")
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(**batch).logits
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
) -> dict[str, Any]:
    """Exact pairwise accuracy of `model` on a frame with columns prompt, chosen, rejected."""
    if pairs.empty:
        raise UserError("no pairs to evaluate")
    encoded = encode_preference_pairs(tokenizer, pairs, max_length)
    scores = score_ids(model, tokenizer, encoded.texts.input_ids, batch_size, progress)
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


def load_pairs(data: str) -> pd.DataFrame:
    """Pairs from a ranked file (all C(K,2) pairs, no split) or a saved DatasetDict (its test split)."""
    path = Path(data)
    if path.is_dir():
        from datasets import load_from_disk

        try:
            loaded = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"{path}: not a dataset saved with save_to_disk ({err})") from err
        split = loaded["test"] if "test" in loaded else loaded
        return split.to_pandas()[["prompt", "chosen", "rejected"]]
    from pipeline.data import load_ranked, make_pairs

    rows, _ = load_ranked(path)
    pairs, _ = make_pairs(rows)
    return pairs


def load_reward_model(model_dir: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise UserError(f"{model_dir}: cannot load a tokenizer ({' '.join(str(err).split())[:200]})") from err
    try:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise UserError(f"{model_dir}: cannot load a reward model ({' '.join(str(err).split())[:200]})") from err
    if model.config.num_labels != 1:
        raise UserError(f"{model_dir}: the model has num_labels={model.config.num_labels}; a reward model has 1")
    return model, tokenizer


def default_max_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    limit = getattr(model.config, "max_position_embeddings", None) or 512
    return int(min(tokenizer.model_max_length, limit))


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Exact pairwise accuracy of a saved reward model.")
    parser.add_argument("--model", required=True, help="reward model directory (or Hub id)")
    parser.add_argument("--data", required=True, help="ranked CSV/TSV/JSONL file, or a saved DatasetDict directory")
    parser.add_argument("--output", help="directory for eval_results.json")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, help="default: the tokenizer's model_max_length (capped at 512)")
    args = parser.parse_args(argv)
    pairs = load_pairs(args.data)
    model, tokenizer = load_reward_model(args.model)
    if torch.cuda.is_available():
        model.to("cuda")
    max_length = args.max_length or default_max_length(model, tokenizer)
    result = summary(evaluate_pairs(model, tokenizer, pairs, max_length, args.batch_size, progress=True))
    result = {"model": args.model, "data": args.data, **result}
    print(json.dumps(result, indent=2))
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval_results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
