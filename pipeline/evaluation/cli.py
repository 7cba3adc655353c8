"""Exact pairwise accuracy of a saved reward model, with a report that says whether the pairs are held-out.

python -m pipeline.evaluation --model DIR --data FILE [--output DIR] [--heldout_only]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from pipeline.core.errors import FlagParser, UserError, cli_entry
from pipeline.core.files import atomic_dir, check_replaceable
from pipeline.data.conversation import check_format
from pipeline.data.report import DataReport
from pipeline.evaluation.accuracy import build_report, evaluate_pairs
from pipeline.evaluation.overlap import Overlap, model_data_report, training_overlap
from pipeline.evaluation.report import write_report
from pipeline.model.arguments import ScorerArguments
from pipeline.model.base import locate_model
from pipeline.model.loading import check_max_length, default_max_length, load_reward_model, position_limit

# All an --output holds after this command: such a folder is an earlier report, replaced as a whole.
OWN_FILES = ("eval_results.json", "summary.json", "pairs.jsonl", "report.md", "report.png")
MIN_MAX_LENGTH = 8  # [CLS] prompt [SEP] answer [SEP] with a few tokens of each


def load_pairs(data: str) -> tuple[pd.DataFrame, DataReport]:
    """Pairs of a ranked or pairwise file (every pair, no split) or a saved DatasetDict (its test split, or its only
    split), read and validated by the data step as for training."""
    from pipeline.data import read_pairs

    try:
        return read_pairs(data, role="test")
    except UserError as err:  # the data step's hint names the recipe key; here the input is a flag
        raise UserError(str(err).replace("check dataset_path", "check --data")) from err


def check_data(data: str) -> None:
    """--data names an existing file or folder, or has the shape of a Hub dataset id (owner/name)."""
    path = Path(data)
    if not path.exists() and (path.suffix or data.count("/") != 1 or data.startswith((".", "/", "~"))):
        raise UserError(
            f"--data {data}: no such file or directory; give a ranked or pairwise file (CSV, TSV, JSONL, JSON, "
            "Parquet) or a directory saved by python -m pipeline.data"
        )


def check_flags(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1 (got {args.batch_size})")
    if args.max_length is not None and args.max_length < MIN_MAX_LENGTH:
        raise UserError(f"--max_length must be at least {MIN_MAX_LENGTH} tokens (got {args.max_length})")


def model_max_length(requested: int | None, model: torch.nn.Module, tokenizer, model_name: str) -> int:
    """--max_length, or the model's default; never more than the model has positions for."""
    if requested is None:
        return default_max_length(model, tokenizer)
    check_max_length(requested, position_limit(model.config), model_name)
    return requested


def heldout_pairs(pairs: pd.DataFrame, overlap: Overlap) -> pd.DataFrame:
    """--heldout_only: the pairs whose prompt the model was not trained on."""
    if not overlap.known:
        raise UserError(f"--heldout_only: cannot tell which pairs come from training prompts: {overlap.note}")
    if overlap.train_pairs == overlap.num_pairs:
        raise UserError(
            f"--heldout_only: all {overlap.num_pairs} pairs of --data come from prompts the model was trained on; "
            "nothing is held-out (give data with new prompts)"
        )
    return pairs[~overlap.mask].reset_index(drop=True)


def build_parser() -> FlagParser:
    parser = FlagParser(
        "python -m pipeline.evaluation", description="Exact pairwise accuracy of a saved reward model, with a report."
    )
    ScorerArguments.add_to(parser, ("model",))
    parser.add_argument("--data", required=True, help="ranked or pairwise file, or a saved DatasetDict directory")
    parser.add_argument("--output", help="new folder for eval_results.json, summary.json, pairs.jsonl, report.md/png")
    parser.add_argument("--base_model", help="also score the untrained base model (directory or Hub id) as a baseline")
    parser.add_argument(
        "--heldout_only", action="store_true", help="score only pairs whose prompt the model was not trained on"
    )
    ScorerArguments.add_to(parser, ("batch_size", "max_length"), batch_size=32)
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_flags(args)
    # A mistyped --model is one line in seconds: located before anything asks the Hub for its data_report.json.
    args.model = locate_model(args.model, "model")
    if args.base_model:
        args.base_model = locate_model(args.base_model, "base model")
    check_data(args.data)
    if args.output:  # replaced whole: new, empty, or an earlier report; creatable; not holding an input
        check_replaceable(args.output, OWN_FILES, "--output", (args.data, args.model, args.base_model))
    pairs, data_report = load_pairs(args.data)
    report_of_model, missing = model_data_report(args.model)
    overlap = training_overlap(pairs, report_of_model, missing=missing, fingerprint=data_report.fingerprint)
    if args.heldout_only:
        kept = heldout_pairs(pairs, overlap)
        left_out = len(pairs) - len(kept)
        print(f"--heldout_only: left out {left_out} pairs from training prompts; scoring {len(kept)}", file=sys.stderr)
        pairs = kept
        overlap = replace(training_overlap(pairs, report_of_model), left_out=left_out)
    if overlap.known:
        pairs = pairs.assign(from_training_prompt=overlap.mask)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load_reward_model(args.model)
    check_format(model.config, args.model)  # conversations rendered as the model was trained
    max_length = model_max_length(args.max_length, model.to(device), tokenizer, args.model)
    base = load_reward_model(args.base_model)[0].to(device) if args.base_model else None
    if overlap.warning():  # once everything is checked, just before scoring
        print(overlap.warning(), file=sys.stderr)

    result = evaluate_pairs(model, tokenizer, pairs, max_length, args.batch_size, progress=True, desc="reward model")
    untrained = None
    if base is not None:
        untrained = evaluate_pairs(
            base, tokenizer, pairs, max_length, args.batch_size, progress=True, desc="untrained baseline"
        )
    report = build_report(pairs, result, untrained)
    report["training_overlap"] = overlap.as_dict()
    headline = {"model": args.model, "data": args.data, **report["model"], "training_overlap": overlap.as_dict()}
    print(json.dumps(headline, indent=2))
    if args.output:
        try:
            with atomic_dir(args.output) as staging:  # the whole report or nothing; an earlier one is replaced whole
                write_report(staging, pairs, result, report)
                (staging / "eval_results.json").write_text(json.dumps(headline, indent=2) + "\n")
        except OSError as err:
            raise UserError(f"--output {args.output}: cannot write the report ({err.strerror or err})") from err
        print(f"report written to {args.output}/report.md")
