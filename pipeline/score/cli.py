"""Score many (prompt, response) rows of a file with a saved reward model; writes the rows plus a score column.

python -m pipeline.score --model DIR --input FILE --output FILE [--rank] [--standardize] [--precision auto]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.core.errors import FlagParser, UserError, cli_entry
from pipeline.core.files import atomic_file, check_output_file
from pipeline.data.conversation import check_format
from pipeline.model.arguments import ScorerArguments
from pipeline.model.loading import check_max_length, position_limit
from pipeline.model.scorer import RewardScorer

OUTPUT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl"}
# The least each number flag may be: below 8 tokens max_length leaves no room for [CLS] prompt [SEP] response [SEP]
# (below 3 the tokenizer cannot even truncate, and silently scores something else); as in python -m pipeline.evaluation.
FLAG_MINIMUMS = {"max_length": 8, "max_tokens": 1, "batch_size": 1, "num_threads": 1}


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, least in FLAG_MINIMUMS.items():
        value = getattr(args, flag)
        if value is not None and value < least:
            raise UserError(f"--{flag} must be at least {least} (got {value}); leave it out for the default")


def _local_position_limit(model: str) -> int | None:
    """The limit from a local model's config.json, read before loading the model (None for a Hub id)."""
    try:
        return position_limit(json.loads((Path(model) / "config.json").read_text()))
    except (OSError, ValueError, AttributeError):
        return None


def _input_columns(rows: Any, args: argparse.Namespace) -> tuple[int, int]:
    """Positions of the prompt and response columns, found by the data step's column finder; a missing one, or one
    whose name the header repeats, is a one-line error."""
    from pipeline.data import find_column

    names = [str(c) for c in rows.frame.columns]
    responses = [args.response_column] if args.response_column else ["response", "answer"]
    prompt = find_column(names, args.prompt_column, label=rows.label)
    response = find_column(names, *responses, label=rows.label)
    missing = [
        name
        for name, found in ((args.prompt_column, prompt), (args.response_column or "response (or answer)", response))
        if found is None
    ]
    if missing:
        found = ", ".join(map(repr, names))
        raise UserError(
            f"{rows.label}: missing column {' and '.join(map(repr, missing))} (found {found}); rename it in the file "
            "or pass --prompt_column / --response_column"
        )
    return prompt, response


def _check_output_columns(names: list[str], new_columns: list[str], label: str, kind: str) -> None:
    clash = [c for c in new_columns if c in names]
    if clash:
        raise UserError(f"{label}: already has a column {clash[0]!r}; choose another name with --score_column")
    repeated = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if repeated is not None and kind == "jsonl":
        raise UserError(
            f"{label}: column {repeated!r} appears twice in the header, and a JSON object cannot hold both; rename one "
            "of them, or write a .csv or .tsv --output (which keeps both)"
        )


def per_prompt_rank(prompts: Sequence[str], scores: np.ndarray) -> np.ndarray:
    """Rank of each response among the responses to the same prompt: 1 = highest score; ties share the best rank."""
    frame = pd.DataFrame({"prompt": list(prompts), "score": np.asarray(scores, dtype=np.float64)})
    return frame.groupby("prompt", sort=False)["score"].rank(ascending=False, method="min").astype(int).to_numpy()


def _cell(value: Any) -> str:
    """A value as CSV text: text as it is, null as an empty field, anything else as JSON writes it (exactly)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, default=str)


def write_output(frame: pd.DataFrame, path: Path, kind: str) -> None:
    """Every value written as it was read (integers stay integers, null stays null, floats in full), whole or not at
    all: a failed run leaves no half-written file."""
    names = [str(name) for name in frame.columns]
    columns = [frame.iloc[:, i].tolist() for i in range(len(names))]  # Python values, numpy scalars included
    with atomic_file(path) as staging, open(staging, "w", encoding="utf-8", newline="") as handle:
        if kind == "jsonl":
            for row in zip(*columns, strict=True):
                record = dict(zip(names, row, strict=True))
                handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        else:
            writer = csv.writer(handle, delimiter="\t" if kind == "tsv" else ",", lineterminator="\n")
            writer.writerow(names)
            writer.writerows([_cell(value) for value in row] for row in zip(*columns, strict=True))


def _processes(device: str) -> tuple[int, int, str]:
    """(rank, processes, device) of this process. Under `accelerate launch` (or torchrun) with several processes,
    each scores every N-th batch on its own device (its local GPU, else the CPU) and the main process writes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, device
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    own = str(state.device) if device == "auto" else device
    return state.process_index, state.num_processes, own


def _merge_shards(scores: np.ndarray) -> np.ndarray:
    """Every process's scores (NaN where another process scored the row), merged in input order on every process."""
    from accelerate.utils import gather_object

    merged = np.full(len(scores), np.nan)
    for shard in gather_object([scores]):
        merged = np.where(np.isnan(merged), shard, merged)
    return merged


def _finish_processes() -> None:
    """Every process waits for the main one's output, then leaves the process group together: a process that
    exits while another still uses the group can abort it (and the launcher then kills the rest)."""
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()


def _parser() -> FlagParser:
    parser = FlagParser(
        "python -m pipeline.score",
        description="Score (prompt, response) rows with a saved reward model; writes the rows plus a score column.",
    )
    ScorerArguments.add_to(parser, ("model",))
    parser.add_argument("--input", required=True, help="CSV, TSV, JSONL, JSON or Parquet file with prompt and response")
    parser.add_argument("--output", required=True, help="output file: .csv, .tsv or .jsonl (values kept as read)")
    parser.add_argument("--prompt_column", default="prompt")
    parser.add_argument("--response_column", help="default: response, or answer when there is no response column")
    parser.add_argument("--score_column", default="score", help="name of the added column (default: score)")
    parser.add_argument("--rank", action="store_true", help="add <score_column>_rank: rank within its prompt, 1 = best")
    parser.add_argument("--standardize", action="store_true", help="(score - reward_mean) / reward_std from config")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    ScorerArguments.add_to(parser, ("precision", "max_length", "max_tokens", "batch_size"))
    parser.add_argument("--num_threads", type=int, help="CPU threads (default: all available cores)")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def _load_scorer(args: argparse.Namespace, device: str) -> RewardScorer:
    """The scorer, on this process's share of the cores, checked against what the user asked before any scoring."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # processes on this machine share its cores
    default = max(1, cores // local) if local > 1 else max(torch.get_num_threads(), cores)
    torch.set_num_threads(args.num_threads or default)
    scorer = RewardScorer.from_pretrained(
        args.model,
        precision=args.precision,
        device=device,
        max_length=args.max_length,
        max_tokens=args.max_tokens,
        batch_size=args.batch_size,
    )
    check_max_length(args.max_length, position_limit(scorer.model.config), args.model)  # a Hub model's limit
    check_format(scorer.model.config, args.model)  # conversations rendered as the model was trained
    if args.standardize and scorer.reward_stats is None:
        scorer.standardize(np.zeros(0))  # raises the one-line error before any scoring
    return scorer


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)

    # Everything a user typed is checked before the input is read and the model loaded.
    _check_numbers(args)
    if not args.score_column:
        raise UserError("--score_column must not be empty")
    source, target = Path(args.input), Path(args.output)
    check_output_file(target, "--output", inputs=(args.input,))
    kind = OUTPUT_FORMATS.get(target.suffix.lower())
    if kind is None:
        raise UserError(f"--output {target}: unknown format {target.suffix!r}; use .csv, .tsv or .jsonl")
    check_max_length(args.max_length, _local_position_limit(args.model), args.model)
    from pipeline.data import read_rows

    rows = read_rows(source)
    if rows.frame.empty:
        raise UserError(f"{source}: no rows to score (only a header)")
    prompt_col, response_col = _input_columns(rows, args)
    new_columns = [args.score_column] + ([f"{args.score_column}_rank"] if args.rank else [])
    _check_output_columns([str(c) for c in rows.frame.columns], new_columns, rows.label, kind)
    prompts, responses = rows.texts(prompt_col, role="prompt"), rows.texts(response_col)

    rank, processes, device = _processes(args.device)
    scorer = _load_scorer(args, device)
    scores, truncated = scorer.score(
        prompts,
        responses,
        standardize=args.standardize,
        progress=not args.no_progress and rank == 0,
        return_truncated=True,
        shard=(rank, processes),
    )
    if processes > 1:
        scores = _merge_shards(scores)
    try:
        if rank == 0:  # the main process writes the one output
            frame = rows.frame
            frame[args.score_column] = scores
            if args.rank:
                frame[f"{args.score_column}_rank"] = per_prompt_rank(prompts, scores)
            write_output(frame, target, kind)
    finally:
        if processes > 1:
            _finish_processes()
    if rank != 0:
        return
    truncated = int(truncated.sum())
    note = f"; {truncated} longer than max_length {scorer.max_length} were truncated" if truncated else ""
    print(
        f"scored {len(frame)} rows with {args.model} ({scorer.precision} on {scorer.device}){note}; wrote {target}",
        file=sys.stderr,
    )
