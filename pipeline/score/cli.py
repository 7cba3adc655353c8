"""Score many (prompt, response) rows of a file with a saved reward model; writes the rows plus a score column.

python -m pipeline.score --model DIR --input FILE --output FILE [--rank] [--standardize] [--precision auto]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.core.errors import UserError, cli_entry
from pipeline.core.files import atomic_file
from pipeline.model.scorer import PRECISIONS, RewardScorer

OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _input_columns(frame: pd.DataFrame, args: argparse.Namespace, source: Path) -> tuple[str, str]:
    """The prompt and response columns, found by the data step's column finder; a missing one is a one-line error."""
    from pipeline.data import find_column

    names = [str(c) for c in frame.columns]
    responses = [args.response_column] if args.response_column else ["response", "answer"]
    prompt, response = find_column(names, args.prompt_column), find_column(names, *responses)
    missing = [
        name
        for name, found in ((args.prompt_column, prompt), (args.response_column or "response (or answer)", response))
        if found is None
    ]
    if missing:
        found = ", ".join(map(repr, names))
        raise UserError(
            f"{source}: missing column {' and '.join(map(repr, missing))} (found {found}); rename it in the file or "
            "pass --prompt_column / --response_column"
        )
    return frame.columns[prompt], frame.columns[response]


def _texts(frame: pd.DataFrame, column: str, path: Path) -> list[str]:
    values = frame[column].tolist()
    for i, value in enumerate(values):
        if value is None or (isinstance(value, float) and np.isnan(value)):
            values[i] = ""
        elif not isinstance(value, str):
            if isinstance(value, (list, dict)):
                raise UserError(f"{path}: row {i + 1}: column {column!r} holds a list or object, not text")
            values[i] = str(value)
    return values


def per_prompt_rank(prompts: Sequence[str], scores: np.ndarray) -> np.ndarray:
    """Rank of each response among the responses to the same prompt: 1 = highest score; ties share the best rank."""
    frame = pd.DataFrame({"prompt": list(prompts), "score": np.asarray(scores, dtype=np.float64)})
    return frame.groupby("prompt", sort=False)["score"].rank(ascending=False, method="min").astype(int).to_numpy()


def write_output(frame: pd.DataFrame, path: Path, kind: str) -> None:
    """Written whole or not at all: a failed run leaves no half-written file."""
    with atomic_file(path) as staging:
        if kind == "jsonl":
            frame.to_json(staging, orient="records", lines=True, force_ascii=False)
        else:
            frame.to_csv(staging, index=False, sep="\t" if kind == "tsv" else ",")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Score (prompt, response) rows with a saved reward model; writes the rows plus a score column."
    )
    parser.add_argument("--model", required=True, help="reward model directory (or Hub id)")
    parser.add_argument("--input", required=True, help="CSV, TSV, JSONL or Parquet file with prompt and response")
    parser.add_argument("--output", required=True, help="output file: .csv, .tsv or .jsonl")
    parser.add_argument("--prompt_column", default="prompt")
    parser.add_argument("--response_column", help="default: response, or answer when there is no response column")
    parser.add_argument("--score_column", default="score", help="name of the added column (default: score)")
    parser.add_argument("--rank", action="store_true", help="add <score_column>_rank: rank within its prompt, 1 = best")
    parser.add_argument("--standardize", action="store_true", help="(score - reward_mean) / reward_std from config")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="default fp32 (exact)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--max_length", type=int, help="default: the tokenizer's model_max_length (capped at 512)")
    parser.add_argument("--max_tokens", type=int, help="padded tokens per batch (default 4096 on CPU, 65536 on GPU)")
    parser.add_argument("--batch_size", type=int, help="most sequences per batch (default 64 on CPU, 512 on GPU)")
    parser.add_argument("--num_threads", type=int, help="CPU threads (default: all available cores)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    source, target = Path(args.input), Path(args.output)
    if _same_file(source, target):
        raise UserError(f"--output {target} is the input file; refusing to overwrite it, choose another name")
    kind = OUTPUT_FORMATS.get(target.suffix.lower())
    if kind is None:
        raise UserError(f"--output {target}: unknown format {target.suffix!r}; use .csv, .tsv or .jsonl")
    from pipeline.data import read_rows

    frame = read_rows(source)
    if frame.empty:
        raise UserError(f"{source}: no rows to score (only a header)")
    prompt_col, response_col = _input_columns(frame, args, source)
    new_columns = [args.score_column] + ([f"{args.score_column}_rank"] if args.rank else [])
    clash = [c for c in new_columns if c in frame.columns]
    if clash:
        raise UserError(f"{source}: already has a column {clash[0]!r}; choose another name with --score_column")
    prompts, responses = _texts(frame, prompt_col, source), _texts(frame, response_col, source)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(args.num_threads or max(torch.get_num_threads(), cores))
    scorer = RewardScorer.from_pretrained(
        args.model,
        precision=args.precision,
        device=args.device,
        max_length=args.max_length,
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
    )
    if args.standardize and scorer.reward_stats is None:
        scorer.standardize(np.zeros(0))  # raises the one-line error before any scoring
    scores, truncated = scorer.score(
        prompts, responses, standardize=args.standardize, progress=not args.no_progress, return_truncated=True
    )
    frame[args.score_column] = scores
    if args.rank:
        frame[f"{args.score_column}_rank"] = per_prompt_rank(prompts, scores)
    write_output(frame, target, kind)
    truncated = int(truncated.sum())
    note = f"; {truncated} longer than max_length {scorer.max_length} were truncated" if truncated else ""
    print(
        f"scored {len(frame)} rows with {args.model} ({scorer.precision} on {scorer.device}){note}; wrote {target}",
        file=sys.stderr,
    )
