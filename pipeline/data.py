"""Data step: ranked answers -> all C(K,2) preference pairs per prompt -> prompt-level train/test DatasetDict.

Policy (what is an error, what is a counted drop) is documented in README.md.

    python -m pipeline.data --config recipes/quickstart.yaml [--dataset_path FILE] [--output_dir DIR]
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict

from pipeline.atomic import atomic_dir
from pipeline.errors import UserError, cli_entry

RANKED_COLUMNS = ("prompt", "answer", "rank")
HEADER_LINES = 1  # spreadsheet row of a record = its 0-based position + 1 (header) + 1


@dataclass
class DataReport:
    """What happened to every input row; printed and saved next to the dataset."""

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    prompts: int = 0
    pairs: int = 0
    tied_pairs_skipped: int = 0
    splits: dict[str, dict[str, int]] = field(default_factory=dict)

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_dropped": sum(self.dropped.values()),
            "dropped_by_reason": dict(self.dropped),
            "prompts": self.prompts,
            "pairs": self.pairs,
            "tied_pairs_skipped": self.tied_pairs_skipped,
            "splits": self.splits,
        }

    def summary(self) -> str:
        dropped = ", ".join(f"{k}: {v}" for k, v in self.dropped.items()) or "none"
        lines = [
            f"data: {self.source}",
            f"  rows read {self.rows_read}, kept {self.rows_kept}, dropped {sum(self.dropped.values())} ({dropped})",
            f"  prompts {self.prompts}, pairs {self.pairs}"
            + (f", tied pairs skipped {self.tied_pairs_skipped}" if self.tied_pairs_skipped else ""),
        ]
        for name, sizes in self.splits.items():
            lines.append(f"  {name}: {sizes['prompts']} prompts, {sizes['pairs']} pairs")
        return "\n".join(lines)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV/TSV/JSONL file as strings, exactly as written (no NA guessing, BOM stripped)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (set dataset_path in the recipe or pass --dataset_path FILE)")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            frame = pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
            frame = frame.astype({c: str for c in frame.columns if frame[c].dtype == object})
        else:
            frame = pd.read_csv(
                path,
                sep="\t" if suffix == ".tsv" else ",",
                dtype=str,
                keep_default_na=False,
                encoding="utf-8-sig",
                engine="c",
            )
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not valid UTF-8 at byte {err.start}; re-save the file as UTF-8") from err
    except pd.errors.EmptyDataError as err:
        raise UserError(f"{path}: the file is empty; expected a header row {','.join(RANKED_COLUMNS)}") from err
    except (pd.errors.ParserError, ValueError) as err:
        raise UserError(f"{path}: cannot be parsed ({' '.join(str(err).split())})") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def load_ranked(path: str | Path, drop_empty_answers: bool = True) -> tuple[pd.DataFrame, DataReport]:
    """Validate a ranked file; return rows (prompt, answer, rank as float, row) and the report so far."""
    frame = read_table(path)
    report = DataReport(source=str(path), rows_read=len(frame))
    missing = [c for c in RANKED_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(frame.columns) or 'none'} "
            f"(a ranked file needs {', '.join(RANKED_COLUMNS)})"
        )
    if frame.empty:
        raise UserError(f"{path}: has a header but no rows")
    frame = frame[list(RANKED_COLUMNS)].copy()
    frame["row"] = np.arange(len(frame)) + HEADER_LINES + 1

    rank_text = frame["rank"].astype(str).str.strip()
    rank = pd.to_numeric(rank_text, errors="coerce")
    bad = rank.isna() | ~np.isfinite(rank) | (rank <= 0)
    if bad.any():
        first = frame.index[bad.to_numpy()][0]
        value = rank_text.loc[first]
        raise UserError(
            f"{path}: row {frame.at[first, 'row']}: rank {value!r} is not a positive number "
            "(rank 1 = best answer, 2 = second best, ...)"
        )
    frame["rank"] = rank.astype(float)

    empty_prompt = frame["prompt"].str.strip() == ""
    report.drop("empty_prompt", empty_prompt.sum())
    frame = frame[~empty_prompt]

    empty_answer = frame["answer"].str.strip() == ""
    if empty_answer.any() and not drop_empty_answers:
        first = frame.index[empty_answer.to_numpy()][0]
        raise UserError(
            f"{path}: row {frame.at[first, 'row']}: empty answer (set drop_empty_answers: true to drop such rows)"
        )
    report.drop("empty_answer", empty_answer.sum())
    frame = frame[~empty_answer]

    # The same answer twice under one prompt: identical rank = harmless duplicate, different rank = contradiction.
    key = frame["prompt"] + "\x00" + frame["answer"]
    ranks_per_key = frame.groupby(key, sort=False)["rank"].nunique()
    conflicting = ranks_per_key[ranks_per_key > 1]
    if len(conflicting):
        rows = frame.loc[key == conflicting.index[0], "row"].tolist()
        raise UserError(
            f"{path}: rows {', '.join(map(str, rows))}: the same prompt and answer have different ranks; "
            "keep one of them"
        )
    duplicate = key.duplicated()
    report.drop("duplicate_row", duplicate.sum())
    frame = frame[~duplicate.to_numpy()]

    answers_per_prompt = frame.groupby("prompt", sort=False)["answer"].transform("size")
    single = answers_per_prompt < 2
    report.drop("prompt_with_one_answer", single.sum())
    frame = frame[~single.to_numpy()]

    if frame.empty:
        raise UserError(f"{path}: every row was dropped ({report.summary().splitlines()[1].strip()})")
    report.rows_kept = len(frame)
    return frame.reset_index(drop=True), report


def make_pairs(rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """All C(K,2) (prompt, chosen, rejected, margin) pairs per prompt; tied ranks form no pair.

    Returns the pairs and the number of tied pairs skipped.
    """
    rows = rows.reset_index(drop=True)
    ids = pd.factorize(rows["prompt"])[0]
    slim = pd.DataFrame({"pid": ids, "i": np.arange(len(rows)), "rank": rows["rank"].to_numpy()})
    both = slim.merge(slim, on="pid", suffixes=("_a", "_b"))
    both = both[both["i_a"] < both["i_b"]]
    tied = int((both["rank_a"] == both["rank_b"]).sum())
    both = both[both["rank_a"] != both["rank_b"]]
    a_better = (both["rank_a"] < both["rank_b"]).to_numpy()
    chosen = np.where(a_better, both["i_a"], both["i_b"])
    rejected = np.where(a_better, both["i_b"], both["i_a"])
    order = np.lexsort((rejected, chosen))  # deterministic order: by the rows' order in the file
    chosen, rejected = chosen[order], rejected[order]
    answers = rows["answer"].to_numpy()
    rank = rows["rank"].to_numpy()
    pairs = pd.DataFrame(
        {
            "prompt": rows["prompt"].to_numpy()[chosen],
            "chosen": answers[chosen],
            "rejected": answers[rejected],
            "margin": (rank[rejected] - rank[chosen]).astype(float),
        }
    )
    return pairs, tied


def prompt_key(prompts: pd.Series) -> pd.Series:
    """Prompts that differ only in case or whitespace are the same prompt for the split."""
    return prompts.str.split().str.join(" ").str.lower()


def split_by_prompt(pairs: pd.DataFrame, test_size: float, seed: int) -> dict[str, pd.DataFrame]:
    """Seeded prompt-level split; independent of row order (prompts are ordered by a seeded hash)."""
    keys = prompt_key(pairs["prompt"])
    unique = pd.Series(keys.unique())
    if len(unique) < 2:
        raise UserError("need at least 2 distinct prompts to hold some out for evaluation")
    digest = unique.map(lambda k: hashlib.blake2b(f"{seed}\x00{k}".encode(), digest_size=8).hexdigest())
    n_test = min(max(1, round(test_size * len(unique))), len(unique) - 1)
    test_keys = set(unique[np.argsort(digest.to_numpy(), kind="stable")[:n_test]])
    is_test = keys.isin(test_keys).to_numpy()
    return {"train": pairs[~is_test].reset_index(drop=True), "test": pairs[is_test].reset_index(drop=True)}


def build_dataset(
    dataset_path: str | Path, test_size: float, split_seed: int, drop_empty_answers: bool = True
) -> tuple[DatasetDict, DataReport]:
    rows, report = load_ranked(dataset_path, drop_empty_answers)
    pairs, tied = make_pairs(rows)
    report.tied_pairs_skipped = tied
    if pairs.empty:
        raise UserError(f"{dataset_path}: no preference pairs (every prompt's answers share one rank)")
    report.prompts = int(prompt_key(rows["prompt"]).nunique())
    report.pairs = len(pairs)
    splits = split_by_prompt(pairs, test_size, split_seed)
    for name, frame in splits.items():
        report.splits[name] = {"prompts": int(prompt_key(frame["prompt"]).nunique()), "pairs": len(frame)}
    dataset = DatasetDict({name: Dataset.from_pandas(frame, preserve_index=False) for name, frame in splits.items()})
    return dataset, report


def save_dataset(dataset: DatasetDict, report: DataReport, output_dir: str | Path) -> None:
    """Write the DatasetDict and data_report.json atomically: a failure leaves no partial directory."""
    with atomic_dir(output_dir) as staging:
        dataset.save_to_disk(str(staging))
        (staging / "data_report.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    from pipeline.config import parse_recipe

    argv = list(sys.argv[1:] if argv is None else argv)
    # --output_dir here is the dataset's directory, not the recipe's model output_dir.
    output_dir = "data/processed"
    if "--output_dir" in argv:
        index = argv.index("--output_dir")
        if index + 1 >= len(argv):
            raise UserError("--output_dir needs a directory")
        output_dir = argv[index + 1]
        del argv[index : index + 2]
    script_args, _, _ = parse_recipe(argv)
    dataset, report = build_dataset(
        script_args.dataset_path, script_args.test_size, script_args.split_seed, script_args.drop_empty_answers
    )
    save_dataset(dataset, report, output_dir)
    print(report.summary())
    print(f"saved DatasetDict to {output_dir}")


if __name__ == "__main__":
    main()
