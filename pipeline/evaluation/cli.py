"""Exact pairwise accuracy of a saved reward model, with a report.

python -m pipeline.evaluation --model DIR --data FILE [--output DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from pipeline.core.errors import cli_entry
from pipeline.evaluation.accuracy import build_report, evaluate_pairs
from pipeline.evaluation.report import write_report
from pipeline.model.loading import default_max_length, load_reward_model


def load_pairs(data: str) -> pd.DataFrame:
    """Pairs of a ranked or pairwise file (every pair, no split) or a saved DatasetDict (its test split, or its only
    split), read and validated by the data step as for training."""
    from pipeline.data import read_pairs

    return read_pairs(data, role="test")[0]


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
