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
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pipeline.encoding import encode_preference_pairs
from pipeline.errors import UserError, cli_entry
from pipeline.first_token import check, check_rows, first_token_logits
from pipeline.loading import default_max_length, load_reward_model
from pipeline.metrics import PAIRWISE_ACCURACY
from pipeline.pair_metrics import length_scores, summarize
from pipeline.report_plot import plot_report


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


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def report_markdown(report: dict[str, Any]) -> str:
    rows = {"reward model": report["model"], **report["baselines"]}
    lines = [
        "# Held-out evaluation",
        "",
        "Pairwise accuracy = pairs where the preferred answer scores strictly higher / all pairs (ties count as "
        "wrong). Intervals: 95% bootstrap over prompts. Baselines are scored on the same pairs.",
        "",
        "| scorer | accuracy | 95% CI | ties | gap 1 | gap 2 | gap 3+ | Kendall tau | top-1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        gaps = [_fmt(r["by_rank_gap"].get(g, {}).get("accuracy")) for g in ("1", "2", "3+")]
        lines.append(
            f"| {name} | {r['pairwise_accuracy']:.3f} | {r['ci95'][0]:.3f}–{r['ci95'][1]:.3f} | {r['num_ties']} | "
            f"{' | '.join(gaps)} | {_fmt(r['kendall_tau'])} | {_fmt(r['top1_accuracy'])} |"
        )
    best = report["best_trivial_baseline"]
    lines += ["", f"{report['model']['num_pairs']} pairs. Best trivial baseline: {best['name']} "
              f"({best['pairwise_accuracy']:.3f}).", "", "![evaluation](report.png)", ""]  # fmt: skip
    return "\n".join(lines)


def write_report(out_dir: str | Path, pairs: pd.DataFrame, result: dict[str, Any], report: dict[str, Any]) -> None:
    """pairs.jsonl (per-pair scores), summary.json, report.md and report.png in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chosen, rejected = np.asarray(result["chosen_scores"]), np.asarray(result["rejected_scores"])
    prompt_ids, _ = pd.factorize(pairs["prompt"])
    per_pair = pd.DataFrame(
        {
            "prompt_id": prompt_ids,
            "chosen_score": chosen,
            "rejected_score": rejected,
            "correct": chosen > rejected,
            "margin": pairs["margin"].to_numpy() if "margin" in pairs else 1.0,
        }
    )
    per_pair.to_json(out / "pairs.jsonl", orient="records", lines=True)
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(report))
    plot_report(out / "report.png", chosen, rejected, report["model"], report["baselines"])


def load_pairs(data: str) -> pd.DataFrame:
    """Pairs of a ranked or pairwise file (every pair, no split) or a saved DatasetDict (its test split)."""
    path = Path(data)
    if path.is_dir():
        from datasets import load_from_disk

        try:
            loaded = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"{path}: not a dataset saved with save_to_disk ({err})") from err
        split = loaded["test"] if "test" in loaded else loaded
        frame = split.to_pandas()
        return frame[[c for c in ("prompt", "chosen", "rejected", "margin") if c in frame]]
    from pipeline.data import read_pairs

    return read_pairs(path)[0]


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Exact pairwise accuracy of a saved reward model, with a report.")
    parser.add_argument("--model", required=True, help="reward model directory (or Hub id)")
    parser.add_argument("--data", required=True, help="ranked CSV/TSV/JSONL file, or a saved DatasetDict directory")
    parser.add_argument("--output", help="directory for eval_results.json, summary.json, pairs.jsonl, report.md/png")
    parser.add_argument("--base_model", help="also score the untrained base model (directory or Hub id) as a baseline")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_length", type=int, help="default: the tokenizer's model_max_length (capped at 512)")
    args = parser.parse_args(argv)
    pairs = load_pairs(args.data)
    model, tokenizer = load_reward_model(args.model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    max_length = args.max_length or default_max_length(model.to(device), tokenizer)
    result = evaluate_pairs(model, tokenizer, pairs, max_length, args.batch_size, progress=True, desc="reward model")
    untrained = None
    if args.base_model:
        base, _ = load_reward_model(args.base_model)
        untrained = evaluate_pairs(
            base.to(device), tokenizer, pairs, max_length, args.batch_size, progress=True, desc="untrained baseline"
        )
    report = build_report(pairs, result, untrained)
    headline = {"model": args.model, "data": args.data, **report["model"]}
    print(json.dumps(headline, indent=2))
    if args.output:
        write_report(args.output, pairs, result, report)
        (Path(args.output) / "eval_results.json").write_text(json.dumps(headline, indent=2) + "\n")
        print(f"report written to {args.output}/report.md")


if __name__ == "__main__":
    main()
