"""Score many (prompt, response) rows of a file with a saved reward model; writes the rows plus a score column.

python -m pipeline.score --model DIR --input FILE --output FILE [--rank] [--standardize] [--precision auto]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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


def _input_columns(names: list[str], label: str, args: argparse.Namespace) -> tuple[int, int]:
    """Positions of the prompt and response columns among `names`, found by the data step's column finder; a missing
    one, or one whose name the header repeats, is a one-line error."""
    from pipeline.data import find_column

    responses = [args.response_column] if args.response_column else ["response", "answer"]
    prompt = find_column(names, args.prompt_column, label=label)
    response = find_column(names, *responses, label=label)
    missing = [
        name
        for name, found in ((args.prompt_column, prompt), (args.response_column or "response (or answer)", response))
        if found is None
    ]
    if missing:
        found = ", ".join(map(repr, names))
        raise UserError(
            f"{label}: missing column {' and '.join(map(repr, missing))} (found {found}); rename it in the file "
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


def prompt_keys(prompts: Sequence[str]) -> np.ndarray:
    """A 128-bit digest of each prompt (two uint64 per row): what --rank groups by, 16 bytes a row instead of the
    prompt itself (two different prompts share a digest with odds of about n^2 / 2^129)."""
    digests = b"".join(hashlib.blake2b(p.encode("utf-8", "surrogatepass"), digest_size=16).digest() for p in prompts)
    return np.frombuffer(digests, dtype="<u8").reshape(-1, 2)


def per_prompt_rank(keys: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Rank of each response among the responses to the same prompt (`prompt_keys`): 1 = highest score; ties share
    the best rank."""
    frame = pd.DataFrame({"a": keys[:, 0], "b": keys[:, 1], "score": np.asarray(scores, dtype=np.float64)})
    return frame.groupby(["a", "b"], sort=False)["score"].rank(ascending=False, method="min").astype(int).to_numpy()


def _cell(value: Any) -> str:
    """A value as CSV text: text as it is, null as an empty field, anything else as JSON writes it (exactly)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, default=str)


@contextlib.contextmanager
def output_writer(path: Path, kind: str, names: list[str]) -> Iterator[Callable[[list[list[Any]]], None]]:
    """A writer of rows (given as columns of Python values, `names` in order) to `path`: every value written as it
    was read (integers stay integers, null stays null, floats in full), whole or not at all: a failed run leaves no
    half-written file."""
    with atomic_file(path) as staging, open(staging, "w", encoding="utf-8", newline="") as handle:
        if kind == "jsonl":

            def write(columns: list[list[Any]]) -> None:
                for row in zip(*columns, strict=True):
                    handle.write(json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False, default=str) + "\n")

        else:
            writer = csv.writer(handle, delimiter="\t" if kind == "tsv" else ",", lineterminator="\n")
            writer.writerow(names)

            def write(columns: list[list[Any]]) -> None:
                writer.writerows([_cell(value) for value in row] for row in zip(*columns, strict=True))

        yield write


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


@dataclass
class _Source:
    """The input as pass 1 reads it: chunks of `chunk_rows` rows, the columns to score (positions; names for JSON,
    whose chunks have their own objects' keys) and the file's columns (for JSON: the keys seen so far)."""

    path: Path
    chunk_rows: int
    is_json: bool
    columns: tuple[int | str, int | str]
    names: list[str]
    label: str


def _open_source(args: argparse.Namespace, kind: str, new_columns: list[str], chunk_rows: int) -> _Source:
    """The first chunk, read to check the columns before the model is loaded."""
    from pipeline.data import iter_rows

    source = Path(args.input)
    first = next(iter_rows(source, chunk_rows), None)
    if first is None:
        raise UserError(f"{source}: no rows to score (only a header)")
    names = [str(c) for c in first.frame.columns]
    prompt, response = _input_columns(names, first.label, args)
    _check_output_columns(names, new_columns, first.label, kind)
    is_json = source.suffix.lower() in (".jsonl", ".ndjson", ".json")
    columns = (names[prompt], names[response]) if is_json else (prompt, response)
    _texts(first, columns[0], "prompt"), _texts(first, columns[1], "answer")  # values that are no text: refused now
    return _Source(source, chunk_rows, is_json, columns, names, first.label)


def _texts(rows: Any, column: int | str, role: str) -> list[str]:
    if isinstance(column, int):
        return rows.texts(column, role=role)
    names = [str(c) for c in rows.frame.columns]
    return rows.texts(names.index(column), role=role) if column in names else [""] * len(rows.frame)


def _scored_chunks(
    scorer: RewardScorer, source: _Source, shard: tuple[int, int], progress: bool
) -> Iterator[tuple[Any, list[str], np.ndarray, np.ndarray]]:
    """Pass 1: each chunk's rows, prompts, raw scores (every process's, merged) and truncation flags, in order."""
    from tqdm.auto import tqdm

    from pipeline.data import iter_rows

    held: collections.deque = collections.deque()

    def texts() -> Iterator[tuple[list[str], list[str]]]:
        for rows in iter_rows(source.path, source.chunk_rows):
            prompts = _texts(rows, source.columns[0], "prompt")
            held.append((rows, prompts))
            if source.is_json:
                source.names.extend(n for n in map(str, rows.frame.columns) if n not in source.names)
            yield prompts, _texts(rows, source.columns[1], "answer")

    with tqdm(desc="scoring", unit="seq", disable=not progress) as bar:
        for scores, truncated in scorer.score_stream(texts(), shard=shard, bar=bar):
            rows, prompts = held.popleft()
            yield rows, prompts, _merge_shards(scores) if shard[1] > 1 else scores, truncated


def _row_columns(rows: Any) -> list[list[Any]]:
    return [rows.frame.iloc[:, i].tolist() for i in range(rows.frame.shape[1])]  # Python values, as read


def _finish(scorer: RewardScorer, scores: np.ndarray, standardize: bool) -> list[float]:
    return (scorer.standardize(scores) if standardize else np.asarray(scores, dtype=np.float64)).tolist()


def _one_pass(scorer: RewardScorer, source: _Source, args: argparse.Namespace, kind: str) -> tuple[int, int]:
    """Score and write chunk by chunk (one process, columns fixed by the header, no --rank): (rows, truncated)."""
    rows_done = truncated_done = 0
    with output_writer(Path(args.output), kind, [*source.names, args.score_column]) as write:
        for rows, _, scores, truncated in _scored_chunks(scorer, source, (0, 1), not args.no_progress):
            write([*_row_columns(rows), _finish(scorer, scores, args.standardize)])
            rows_done, truncated_done = rows_done + len(scores), truncated_done + int(truncated.sum())
    return rows_done, truncated_done


def _two_passes(
    scorer: RewardScorer, source: _Source, args: argparse.Namespace, kind: str, shard: tuple[int, int]
) -> tuple[int, int]:
    """Pass 1 scores every chunk and keeps 8 bytes a row (24 with --rank) and, for JSON, the keys of every object;
    pass 2 (main process) reads the input again and writes it with its scores: (rows, truncated)."""
    from pipeline.data import iter_rows

    parts, keys, truncated_done = [], [], 0
    for _, prompts, scores, truncated in _scored_chunks(scorer, source, shard, not args.no_progress and shard[0] == 0):
        parts.append(scores)
        truncated_done += int(truncated.sum())
        if args.rank:
            keys.append(prompt_keys(prompts))
    scores = np.concatenate(parts)
    new_columns = [args.score_column] + ([f"{args.score_column}_rank"] if args.rank else [])
    if source.is_json:  # the keys of every object now known: the columns read_rows gives, checked again
        prompt, response = _input_columns(source.names, source.label, args)
        if (source.names[prompt], source.names[response]) != source.columns:
            raise UserError(
                f"{source.label}: later objects hold a column that changes which ones are scored; name them with "
                "--prompt_column / --response_column"
            )
        _check_output_columns(source.names, new_columns, source.label, kind)
    if shard[0] != 0:
        return len(scores), truncated_done
    ranks = per_prompt_rank(np.concatenate(keys), scores).tolist() if args.rank else None
    values, offset = _finish(scorer, scores, args.standardize), 0
    with output_writer(Path(args.output), kind, [*source.names, *new_columns]) as write:
        for rows in iter_rows(source.path, source.chunk_rows, names=source.names if source.is_json else None):
            end = offset + len(rows.frame)
            extra = [values[offset:end]] + ([ranks[offset:end]] if ranks is not None else [])
            write([*_row_columns(rows), *extra])
            offset = end
    return len(scores), truncated_done


@cli_entry
def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)

    # Everything a user typed is checked before the model is loaded (the input's columns on its first chunk).
    _check_numbers(args)
    if not args.score_column:
        raise UserError("--score_column must not be empty")
    target = Path(args.output)
    check_output_file(target, "--output", inputs=(args.input,))
    kind = OUTPUT_FORMATS.get(target.suffix.lower())
    if kind is None:
        raise UserError(f"--output {target}: unknown format {target.suffix!r}; use .csv, .tsv or .jsonl")
    check_max_length(args.max_length, _local_position_limit(args.model), args.model)
    new_columns = [args.score_column] + ([f"{args.score_column}_rank"] if args.rank else [])
    from pipeline.model import scorer as scorer_module

    source = _open_source(args, kind, new_columns, scorer_module.CHUNK_SIZE)

    rank, processes, device = _processes(args.device)
    scorer = _load_scorer(args, device)
    try:
        if processes == 1 and not args.rank and not source.is_json:
            rows_done, truncated = _one_pass(scorer, source, args, kind)
        else:
            rows_done, truncated = _two_passes(scorer, source, args, kind, (rank, processes))
    finally:
        if processes > 1:
            _finish_processes()
    if rank != 0:
        return
    note = f"; {truncated} longer than max_length {scorer.max_length} were truncated" if truncated else ""
    print(
        f"scored {rows_done} rows with {args.model} ({scorer.precision} on {scorer.device}){note}; wrote {target}",
        file=sys.stderr,
    )
