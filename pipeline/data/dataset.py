"""Data step: ranked answers or preference pairs -> prompt-level train/test DatasetDict of preference pairs.

Inputs: CSV, TSV, JSONL/JSON, Parquet, a `save_to_disk` directory or a Hub dataset id, in two shapes: ranked
(prompt, answer, rank or score) and pairwise (prompt, chosen, rejected[, margin]). The policy (what is an error, what
is a counted drop) is documented in README.md, "Input format and data policy".

    python -m pipeline.data --config recipes/quickstart.yaml [--dataset_path FILE] [--output_dir DIR]

Row-level work is vectorised (pyarrow compute and numpy). Python loops touch only distinct prompts (the split hash),
or run on the error path to find the exact row of a malformed record.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict

from pipeline.core.errors import UserError, cli_entry
from pipeline.core.files import atomic_dir, check_replaceable
from pipeline.data.sources import SourceTable, read_file, read_source

PAIRWISE_COLUMNS = ("prompt", "chosen", "rejected")
SHAPES = ("auto", "ranked", "pairwise")
MAX_PAIRS = 200_000_000  # all C(K,2) pairs of a prompt with K answers; beyond this the output would not fit anyway

_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_TAKE_BATCH = 1 << 20


@dataclass(frozen=True)
class ColumnMap:
    """Input column names, set with the recipe keys prompt_column, answer_column, ...; '' switches a column off."""

    prompt: str = "prompt"
    answer: str = "answer"
    rank: str = "rank"
    score: str = "score"
    chosen: str = "chosen"
    rejected: str = "rejected"
    margin: str = "margin"

    @classmethod
    def from_args(cls, args: Any) -> ColumnMap:
        return cls(**{f.name: getattr(args, f"{f.name}_column", f.default) for f in fields(cls)})


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
    input_format: str = ""
    shape: str = ""
    fingerprint: str = ""
    columns: dict[str, str] = field(default_factory=dict)
    margin: str = ""
    split_method: str = ""
    notes: list[str] = field(default_factory=list)
    test_file: DataReport | None = None

    def drop(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(count)

    def as_dict(self) -> dict[str, Any]:
        result = {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_dropped": sum(self.dropped.values()),
            "dropped_by_reason": dict(self.dropped),
            "prompts": self.prompts,
            "pairs": self.pairs,
            "tied_pairs_skipped": self.tied_pairs_skipped,
            "splits": self.splits,
            "input_format": self.input_format,
            "shape": self.shape,
            "fingerprint": self.fingerprint,
            "columns": dict(self.columns),
            "margin": self.margin,
            "split_method": self.split_method,
            "notes": list(self.notes),
        }
        if self.test_file is not None:
            result["test_file"] = self.test_file.as_dict()
        return result

    def _lines(self) -> list[str]:
        dropped = ", ".join(f"{k}: {v}" for k, v in self.dropped.items()) or "none"
        kind = ", ".join(x for x in (self.input_format, self.shape) if x)
        return [
            f"data: {self.source}"
            + (f" ({kind})" if kind else "")
            + (f" {self.fingerprint[:19]}" if self.fingerprint else ""),
            f"  rows read {self.rows_read}, kept {self.rows_kept}, dropped {sum(self.dropped.values())} ({dropped})",
            f"  prompts {self.prompts}, pairs {self.pairs}"
            + (f", tied pairs skipped {self.tied_pairs_skipped}" if self.tied_pairs_skipped else ""),
            *(f"  note: {note}" for note in self.notes),
        ]

    def summary(self) -> str:
        lines = self._lines()
        if self.test_file is not None:
            lines += ["test " + line if i == 0 else line for i, line in enumerate(self.test_file._lines())]
        if self.split_method:
            lines.append(f"  split: {self.split_method}")
        for name, sizes in self.splits.items():
            lines.append(f"  {name}: {sizes['prompts']} prompts, {sizes['pairs']} pairs")
        return "\n".join(lines)


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV/TSV/JSONL/JSON/Parquet file: text and number columns as text, exactly as written (no NA guessing,
    BOM stripped, nulls as ''); list/object columns as they are."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (set dataset_path in the recipe or pass --dataset_path FILE)")
    source = read_file(path)
    columns = {}
    for i, name in enumerate(source.table.column_names):
        kind = source.table.column(i).type
        plain = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
        plain |= pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        if name in source.nested or not (plain or pa.types.is_null(kind)):
            columns[name] = source.table.column(i).to_pandas()  # lists and objects, as they are
        else:
            columns[name] = _text(source, i).to_pandas()
    return pd.DataFrame(columns, index=pd.RangeIndex(source.num_rows))


# ---------------------------------------------------------------------------------------------------------------
# Columns: which shape, which column plays which role, and typed, validated arrays.

_ROLE_KEYS = {role: f"{role}_column" for role in ("prompt", "answer", "rank", "score", "chosen", "rejected", "margin")}


def _resolve(source: SourceTable, columns: ColumnMap, shape: str) -> tuple[str, dict[str, int]]:
    """Shape (ranked or pairwise) and role -> column index; a missing or ambiguous column is a one-line error."""
    names = source.table.column_names
    label = source.label

    def find(role: str) -> int | None:
        wanted = getattr(columns, role)
        if not wanted:
            return None
        hits = [i for i, n in enumerate(names) if n == wanted]
        if not hits:  # a spreadsheet's "Prompt" or " rank " still counts
            hits = [i for i, n in enumerate(names) if n.strip().casefold() == wanted.strip().casefold()]
        if len(hits) > 1:
            raise UserError(
                f"{label}: column {wanted!r} appears {len(hits)} times in the header; rename all but one of them"
            )
        return hits[0] if hits else None

    if shape not in SHAPES:
        raise UserError(f"input_shape must be one of {', '.join(SHAPES)} (got {shape!r})")
    if shape == "auto":
        pairwise = find("chosen") is not None or find("rejected") is not None
        shape = "pairwise" if pairwise and find("answer") is None else "ranked"
    found: dict[str, int] = {}
    roles = ["prompt", "answer"] if shape == "ranked" else ["prompt", "chosen", "rejected"]
    missing = []
    for role in roles:
        index = find(role)
        if index is None:
            missing.append(role)
        else:
            found[role] = index
    if shape == "ranked":
        rank, score = find("rank"), find("score")
        if rank is not None and score is not None:
            raise UserError(
                f"{label}: has both a {names[rank]!r} and a {names[score]!r} column; keep one, or set "
                "score_column: '' (to rank by rank) or rank_column: '' (to rank by score) in the recipe"
            )
        if score is not None:
            found["score"] = score
        elif rank is not None:
            found["rank"] = rank
        else:
            missing.append("rank")
        needs = "prompt, answer and rank (or score)"
    else:
        margin = find("margin")
        if margin is not None:
            found["margin"] = margin
        needs = "prompt, chosen and rejected (margin optional)"
    if missing:
        used = {names[i] for i in found.values()}
        spare = [n for n in names if n not in used]
        parts = []
        for role in missing:
            wanted = getattr(columns, role) or role
            text = wanted + (" (or score)" if role == "rank" and columns.score else "")
            guess = difflib.get_close_matches(wanted.casefold(), [n.casefold() for n in spare], n=1, cutoff=0.6)
            if role == "rank" and not guess and columns.score:
                guess = difflib.get_close_matches(columns.score.casefold(), [n.casefold() for n in spare], 1, 0.6)
            if guess:
                text += f"; did you mean {spare[[n.casefold() for n in spare].index(guess[0])]!r}?"
            parts.append(text)
        keys = ", ".join(f"{_ROLE_KEYS[r]}" for r in missing)
        raise UserError(
            f"{label}: missing column{'s' if len(missing) > 1 else ''} {', '.join(parts)} "
            f"(found {', '.join(map(repr, names)) or 'none'}); a {shape} file needs {needs}: rename the "
            f"column{'s' if len(missing) > 1 else ''} in the file or map {'them' if len(missing) > 1 else 'it'} "
            f"in the recipe ({keys})"
        )
    return shape, found


def _first_invalid_utf8(chunk: pa.Array) -> int:
    lo, hi = 0, len(chunk)  # invariant: chunk[lo:hi] holds the first invalid value
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            chunk.slice(lo, mid - lo).cast(pa.large_string())
            lo = mid
        except pa.ArrowInvalid:
            hi = mid
    return lo


def _text(source: SourceTable, index: int) -> pa.Array:
    """A column as one validated large_string array without nulls (null -> '')."""
    column = source.table.column(index)
    name = source.table.column_names[index]
    if name in source.nested:
        raise UserError(
            f"{source.label}: {source.where(source.nested[name])}: column {name!r} holds a list or object, not text "
            "(the conversational format with lists of messages is not supported); give plain text"
        )
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        chunks = [c.view(pa.binary() if pa.types.is_string(kind) else pa.large_binary()) for c in column.chunks]
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        chunks = list(column.chunks)
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        chunks = [c.cast(pa.large_string()) for c in column.chunks]
    elif pa.types.is_null(kind):
        chunks = [pa.nulls(len(c), pa.large_string()) for c in column.chunks]
    else:
        raise UserError(
            f"{source.label}: column {name!r} holds {kind} values, not text (the conversational format with lists "
            "of messages is not supported); give plain text"
        )
    out, offset = [], 0
    for chunk in chunks:
        try:
            out.append(chunk.cast(pa.large_string()))
        except pa.ArrowInvalid as err:
            bad = offset + _first_invalid_utf8(chunk)
            raise UserError(
                f"{source.label}: {source.where(bad)}: column {name!r} is not valid UTF-8; re-save the file as UTF-8 "
                "(in Excel: CSV UTF-8)"
            ) from err
        offset += len(chunk)
    text = pa.chunked_array(out, pa.large_string()).combine_chunks() if out else pa.array([], pa.large_string())
    return pc.fill_null(text, "") if text.null_count else text


_NUMBER_RULES = {
    "rank": ("a positive number", lambda v: v <= 0, "rank 1 = best answer, 2 = second best, ..."),
    "score": ("a number", lambda v: np.zeros(len(v), bool), "a higher score = a better answer"),
    "margin": ("a number >= 0", lambda v: v < 0, "margin = how much better chosen is than rejected"),
}


def _numbers(source: SourceTable, index: int, role: str, skip: np.ndarray | None = None) -> np.ndarray:
    """A rank/score/margin column as float64; a missing, non-numeric or out-of-range value is a one-line error.

    Rows in `skip` (empty rows, dropped anyway) are not checked.
    """
    column = source.table.column(index)
    name = source.table.column_names[index]
    what, out_of_range, hint = _NUMBER_RULES[role]
    kind = column.type
    raw: pa.Array | None = None
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        values = column.cast(pa.float64()).to_numpy()
        values = np.where(pc.is_null(column).to_numpy(zero_copy_only=False), np.nan, values)
    elif pa.types.is_null(kind):
        values = np.full(len(column), np.nan)
    else:
        raw = _text(source, index)
        trimmed = pc.utf8_trim_whitespace(raw)
        ok = pc.match_substring_regex(trimmed, _NUMBER)
        values = np.full(len(raw), np.nan)
        ok_np = ok.to_numpy(zero_copy_only=False)
        if ok_np.any():
            values[ok_np] = pc.cast(pc.filter(trimmed, ok), pa.float64()).to_numpy()
    bad = ~np.isfinite(values)
    bad[~bad] = out_of_range(values[~bad])
    if skip is not None:
        bad &= ~skip
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        value = raw[first].as_py() if raw is not None else column[first].as_py()
        label = role if name == role else f"{role} (column {name!r})"
        problem = f"{label} is missing" if value is None else f"{label} {_show(value)} is not {what}"
        raise UserError(f"{source.label}: {source.where(first)}: {problem} ({hint}); fix the row")
    return values


def _blank(text: pa.Array) -> np.ndarray:
    return pc.or_(pc.equal(pc.binary_length(text), 0), pc.utf8_is_space(text)).to_numpy(zero_copy_only=False)


def _codes(text: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Factorise: integer code per value (first appearance order) and the distinct values."""
    encoded = text.dictionary_encode()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def _normalise(prompt: str) -> str:
    return " ".join(prompt.split()).lower()


_ODD_SPACE = "[\t\n\x0b\x0c\r\x1c-\x1f]|  |^ | $"  # prompts whose whitespace str.split() would change


def _prompt_keys(dictionary: pa.Array) -> tuple[np.ndarray, list[str]]:
    """Normalised key id for every distinct prompt, and the keys: _normalise, vectorised where it is a lower()."""
    normalised = pc.ascii_lower(dictionary)
    odd = pc.or_(pc.match_substring_regex(dictionary, _ODD_SPACE), pc.invert(pc.string_is_ascii(dictionary)))
    other = np.flatnonzero(odd.to_numpy(zero_copy_only=False))
    if len(other):  # odd whitespace or non-ASCII case rules: Python's own, for those prompts only
        values = normalised.to_numpy(zero_copy_only=False)
        values[other] = [_normalise(p) for p in dictionary.take(pa.array(other)).to_pylist()]
        normalised = pa.array(values, pa.large_string())
    key_of, keys = _codes(normalised)
    return key_of, keys.to_pylist()


# ---------------------------------------------------------------------------------------------------------------
# Validation and pairs. Each function returns the pairs (prompt, chosen, rejected, margin) and the report.


@dataclass
class _Pairs:
    """Pairs as row indices into the validated text columns; materialised per split (no full copy, then filter)."""

    prompt: pa.Array
    chosen: pa.Array
    rejected: pa.Array
    prompt_index: np.ndarray
    chosen_index: np.ndarray
    rejected_index: np.ndarray
    margin: np.ndarray
    key: np.ndarray  # normalised-prompt id of every pair
    keys: list[str]  # normalised prompts by id

    def __len__(self) -> int:
        return len(self.margin)

    def table(self, mask: np.ndarray | None = None) -> pa.Table:
        pick = (lambda a: a) if mask is None else (lambda a: a[mask])
        return pa.table(
            {
                "prompt": _take(self.prompt, pick(self.prompt_index)),
                "chosen": _take(self.chosen, pick(self.chosen_index)),
                "rejected": _take(self.rejected, pick(self.rejected_index)),
                "margin": pa.array(pick(self.margin), pa.float64()),
            }
        )


@dataclass
class _Rows:  # kept rows of a ranked source (indices into the source table)
    kept: np.ndarray
    prompt: pa.Array
    answer: pa.Array
    pid: np.ndarray
    prompt_key: np.ndarray  # normalised key id per prompt code
    keys: list[str]
    value_name: str
    value: np.ndarray


def _drop_rows(report: DataReport, keep: np.ndarray, mask: np.ndarray, reason: str) -> None:
    mask = mask & keep
    report.drop(reason, int(mask.sum()))
    keep &= ~mask


def _check_empty(
    source: SourceTable, report: DataReport, keep: np.ndarray, empty: np.ndarray, drop_empty_answers: bool, what: str
) -> None:
    empty = empty & keep
    if empty.any() and not drop_empty_answers:
        first = int(np.flatnonzero(empty)[0])
        raise UserError(
            f"{source.label}: {source.where(first)}: empty {what} (set drop_empty_answers: true to drop such rows)"
        )
    _drop_rows(report, keep, empty, "empty_answer")


def _exclude(report: DataReport, keep: np.ndarray, pid: np.ndarray, keys: list[str], key_of: np.ndarray, exclude):
    if exclude:
        in_test = np.fromiter((k in exclude for k in keys), bool, len(keys))
        _drop_rows(report, keep, in_test[key_of[pid]], "prompt_in_test_file")


def _maybe_equal(keep: np.ndarray, pid: np.ndarray, texts: list[pa.Array]) -> np.ndarray:
    """Kept rows that may repeat another kept row: same prompt and same text lengths (either order for two texts).

    Only these rows need their texts compared (hashing a million 200-character answers costs more than all the rest).
    """
    index = np.flatnonzero(keep)
    lengths = [pc.binary_length(text).to_numpy()[index] for text in texts]
    if len(lengths) == 2:
        lengths = [np.minimum(*lengths), np.maximum(*lengths)]
    frame = pd.DataFrame({"p": pid[index], **{f"n{i}": n for i, n in enumerate(lengths)}})
    return index[frame.duplicated(keep=False).to_numpy()]


def _first_conflict(frame: pd.DataFrame, by: list[str], value: str) -> np.ndarray | None:
    """Indices of the earliest group of duplicate keys whose `value` differs, or None."""
    dup = frame[frame.duplicated(by, keep=False)]
    if dup.empty:
        return None
    distinct = dup.groupby(by, sort=False)[value].transform("nunique")
    conflicting = dup[distinct.to_numpy() > 1]
    if conflicting.empty:
        return None
    first = conflicting.iloc[0]
    same = (conflicting[by] == first[by]).all(axis=1).to_numpy()
    return conflicting.index.to_numpy()[same]


def _drop_duplicates(
    source: SourceTable,
    report: DataReport,
    keep: np.ndarray,
    n: int,
    frame: pd.DataFrame,
    by: list[str],
    value: str,
    conflict_reason: str,
) -> None:
    """Same key with a different value is an error naming both rows; an exact repeat is dropped and counted."""
    conflict = _first_conflict(frame, by, value)
    if conflict is not None:
        rows = ", ".join(map(str, source.rows(conflict)))
        raise UserError(f"{source.label}: {source.row_word}s {rows}: the same {conflict_reason}; keep one of them")
    duplicate = np.zeros(n, dtype=bool)
    duplicate[frame.index.to_numpy()] = frame.duplicated(by).to_numpy()
    _drop_rows(report, keep, duplicate, "duplicate_row")


def _new_report(source: SourceTable, shape: str, found: dict[str, int]) -> DataReport:
    names = source.table.column_names
    return DataReport(
        source=source.label,
        rows_read=source.num_rows,
        input_format=source.kind,
        shape=shape,
        fingerprint=source.fingerprint,
        columns={role: names[i] for role, i in found.items()},
        notes=list(source.notes),
    )


def _check_rows(source: SourceTable) -> None:
    if source.num_rows == 0:
        has_header = source.kind in ("csv", "tsv")
        raise UserError(f"{source.label}: {'has a header but no rows' if has_header else 'has no rows'}")


def _validate_ranked(
    source: SourceTable, found: dict[str, int], drop_empty_answers: bool, exclude: set[str] | None = None
) -> tuple[_Rows, DataReport]:
    report = _new_report(source, "ranked", found)
    _check_rows(source)
    prompt, answer = _text(source, found["prompt"]), _text(source, found["answer"])
    blank_prompt, blank_answer = _blank(prompt), _blank(answer)
    empty_row = blank_prompt & blank_answer  # e.g. the trailing ",," lines of a spreadsheet export
    value_name = "rank" if "rank" in found else "score"
    value = _numbers(source, found[value_name], value_name, skip=empty_row)
    n = source.num_rows
    keep = np.ones(n, dtype=bool)
    _drop_rows(report, keep, empty_row, "empty_row")
    _drop_rows(report, keep, blank_prompt, "empty_prompt")
    _check_empty(source, report, keep, blank_answer, drop_empty_answers, "answer")
    pid, prompts = _codes(prompt)
    key_of, keys = _prompt_keys(prompts)
    _exclude(report, keep, pid, keys, key_of, exclude)

    # The same answer twice under one prompt: identical value = harmless duplicate, different value = contradiction.
    index = _maybe_equal(keep, pid, [answer])
    aid, _ = _codes(answer.take(pa.array(index)))
    frame = pd.DataFrame({"p": pid[index], "a": aid, "v": value[index]}, index=index)
    _drop_duplicates(source, report, keep, n, frame, ["p", "a"], "v", f"prompt and answer have different {value_name}s")

    counts = np.bincount(pid[keep], minlength=len(prompts))
    _drop_rows(report, keep, counts[pid] < 2, "prompt_with_one_answer")

    index = np.flatnonzero(keep)
    spread = pd.Series(value[index]).groupby(pid[index]).agg(["min", "max"])
    all_tied = np.zeros(len(prompts), dtype=bool)
    all_tied[spread.index.to_numpy()] = (spread["min"] == spread["max"]).to_numpy()
    _drop_rows(report, keep, all_tied[pid], "prompt_all_answers_tied")

    if not keep.any():
        raise UserError(f"{source.label}: every row was dropped ({report._lines()[1].strip()})")
    report.rows_kept = int(keep.sum())
    rows = _Rows(np.flatnonzero(keep), prompt, answer, pid, key_of, keys, value_name, value)
    return rows, report


def _pair_indices(pid: np.ndarray, order: np.ndarray, label: str = "") -> tuple[np.ndarray, np.ndarray, int]:
    """All C(K,2) pairs of rows that share a prompt code, better (lower `order`) first; ties form no pair.

    Returns chosen and rejected row positions, sorted by (chosen, rejected), and the number of tied pairs skipped.
    """
    if len(pid) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), 0
    by_prompt = np.argsort(pid, kind="stable")  # grouped by prompt, file order inside a group
    grouped = pid[by_prompt]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
    sizes = np.diff(np.r_[starts, len(grouped)])
    total = int((sizes * (sizes - 1) // 2).sum())
    if total > MAX_PAIRS:
        raise UserError(
            f"{label + ': ' if label else ''}{total} pairs from prompts with up to {int(sizes.max())} answers is more "
            f"than {MAX_PAIRS}; keep fewer answers per prompt"
        )
    position = np.arange(len(grouped)) - np.repeat(starts, sizes)
    partners = np.repeat(sizes, sizes) - position - 1  # rows after this one in its group
    first = np.repeat(np.arange(len(grouped)), partners)
    block = np.repeat(np.cumsum(partners) - partners, partners)
    second = first + 1 + (np.arange(total) - block)
    a, b = by_prompt[first], by_prompt[second]
    tied = order[a] == order[b]
    a, b = a[~tied], b[~tied]
    a_better = order[a] < order[b]
    chosen, rejected = np.where(a_better, a, b), np.where(a_better, b, a)
    by_row = np.argsort(chosen * len(pid) + rejected)  # deterministic order: by the rows' order in the file
    return chosen[by_row], rejected[by_row], int(tied.sum())


def _distinct(codes: np.ndarray) -> int:
    return int(np.count_nonzero(np.bincount(codes))) if len(codes) else 0


def _take(values: pa.Array, index: np.ndarray) -> pa.ChunkedArray:
    parts = [values.take(pa.array(index[i : i + _TAKE_BATCH])) for i in range(0, len(index), _TAKE_BATCH)]
    return pa.chunked_array(parts, values.type)


def _ranked_pairs(rows: _Rows, report: DataReport, label: str) -> _Pairs:
    order = rows.value if rows.value_name == "rank" else -rows.value
    kept = rows.kept
    chosen, rejected, tied = _pair_indices(rows.pid[kept], order[kept], label)
    chosen, rejected = kept[chosen], kept[rejected]
    report.tied_pairs_skipped = tied
    report.margin = "rank gap" if rows.value_name == "rank" else "score gap (higher score = better)"
    margin = order[rejected] - order[chosen]
    key = rows.prompt_key[rows.pid[chosen]]
    return _Pairs(rows.prompt, rows.answer, rows.answer, chosen, chosen, rejected, margin, key, rows.keys)


def _pairwise(
    source: SourceTable, found: dict[str, int], drop_empty_answers: bool, exclude: set[str] | None = None
) -> tuple[_Pairs, DataReport]:
    report = _new_report(source, "pairwise", found)
    _check_rows(source)
    n = source.num_rows
    prompt = _text(source, found["prompt"])
    chosen, rejected = _text(source, found["chosen"]), _text(source, found["rejected"])
    blank_prompt, blank_chosen, blank_rejected = _blank(prompt), _blank(chosen), _blank(rejected)
    empty_row = blank_prompt & blank_chosen & blank_rejected
    if "margin" in found:
        margin = _numbers(source, found["margin"], "margin", skip=empty_row)
        report.margin = f"from column {source.table.column_names[found['margin']]!r}"
    else:
        margin = np.ones(n)
        report.margin = "1.0 (no margin column)"
    keep = np.ones(n, dtype=bool)
    _drop_rows(report, keep, empty_row, "empty_row")
    _drop_rows(report, keep, blank_prompt, "empty_prompt")
    _check_empty(source, report, keep, blank_chosen | blank_rejected, drop_empty_answers, "chosen or rejected")
    same = pc.equal(pc.utf8_trim_whitespace(chosen), pc.utf8_trim_whitespace(rejected))
    _drop_rows(report, keep, same.to_numpy(zero_copy_only=False), "chosen_equals_rejected")
    pid, prompts = _codes(prompt)
    key_of, keys = _prompt_keys(prompts)
    _exclude(report, keep, pid, keys, key_of, exclude)

    index = _maybe_equal(keep, pid, [chosen, rejected])
    codes, _ = _codes(pa.concat_arrays([chosen.take(pa.array(index)), rejected.take(pa.array(index))]))
    frame = pd.DataFrame(
        {"p": pid[index], "c": codes[: len(index)], "r": codes[len(index) :], "m": margin[index]}, index=index
    )
    _drop_duplicates(
        source, report, keep, n, frame, ["p", "c", "r"], "m", "prompt, chosen and rejected have different margins"
    )
    # A > B and B > A under one prompt (annotators disagree): no usable preference, both rows go.
    frame = frame[keep[frame.index.to_numpy()]]
    both = frame.reset_index().merge(frame, left_on=["p", "c", "r"], right_on=["p", "r", "c"])["index"]
    contradicting = np.zeros(n, dtype=bool)
    contradicting[both.to_numpy()] = True
    _drop_rows(report, keep, contradicting, "contradicting_pair")

    if not keep.any():
        raise UserError(f"{source.label}: every row was dropped ({report._lines()[1].strip()})")
    kept = np.flatnonzero(keep)
    report.rows_kept = len(kept)
    pairs = _Pairs(prompt, chosen, rejected, kept, kept, kept, margin[kept], key_of[pid[kept]], keys)
    return pairs, report


def _process(
    source: SourceTable,
    columns: ColumnMap,
    input_shape: str,
    drop_empty_answers: bool,
    exclude: set[str] | None = None,
) -> tuple[_Pairs, DataReport]:
    shape, found = _resolve(source, columns, input_shape)
    if shape == "pairwise":
        pairs, report = _pairwise(source, found, drop_empty_answers, exclude)
    else:
        rows, report = _validate_ranked(source, found, drop_empty_answers, exclude)
        pairs = _ranked_pairs(rows, report, source.label)
    source.release()
    if len(pairs) == 0:
        raise UserError(f"{source.label}: no preference pairs (every prompt's answers share one rank)")
    report.pairs = len(pairs)
    report.prompts = _distinct(pairs.key)
    return pairs, report


def _column_map(columns: ColumnMap | Mapping[str, str] | None) -> ColumnMap:
    if columns is None:
        return ColumnMap()
    if isinstance(columns, ColumnMap):
        return columns
    known = {f.name for f in fields(ColumnMap)}
    unknown = [k for k in columns if k.removesuffix("_column") not in known]
    if unknown:
        raise UserError(f"unknown column role(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return ColumnMap(**{k.removesuffix("_column"): v for k, v in columns.items()})


# ---------------------------------------------------------------------------------------------------------------
# Public functions (train.py and evaluation.py use these).


def load_ranked(
    path: str | Path, drop_empty_answers: bool = True, *, columns: ColumnMap | Mapping[str, str] | None = None
) -> tuple[pd.DataFrame, DataReport]:
    """Validate a ranked input; return the kept rows (prompt, answer, rank or score as float, row) and the report."""
    source, _ = read_source(path)
    _, found = _resolve(source, _column_map(columns), "ranked")
    rows, report = _validate_ranked(source, found, drop_empty_answers)
    kept = rows.kept
    frame = pd.DataFrame(
        {
            "prompt": rows.prompt.take(pa.array(kept)).to_pandas(),
            "answer": rows.answer.take(pa.array(kept)).to_pandas(),
            rows.value_name: rows.value[kept].astype(float),
            "row": source.rows(kept),
        }
    )
    report.prompts = _distinct(rows.prompt_key[rows.pid[kept]])
    return frame, report


def make_pairs(rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """All C(K,2) (prompt, chosen, rejected, margin) pairs per prompt; tied ranks (or scores) form no pair.

    `rows` has prompt, answer and rank (1 = best) or score (higher = better). Returns the pairs, ordered by the rows'
    order, and the number of tied pairs skipped.
    """
    rows = rows.reset_index(drop=True)
    order = rows["rank"].to_numpy(float) if "rank" in rows else -rows["score"].to_numpy(float)
    pid = pd.factorize(rows["prompt"])[0]
    chosen, rejected, tied = _pair_indices(pid, order)
    pairs = pd.DataFrame(
        {
            "prompt": rows["prompt"].iloc[chosen].to_numpy(),
            "chosen": rows["answer"].iloc[chosen].to_numpy(),
            "rejected": rows["answer"].iloc[rejected].to_numpy(),
            "margin": (order[rejected] - order[chosen]).astype(float),
        }
    )
    return pairs, tied


def read_pairs(
    path: str | Path,
    drop_empty_answers: bool = True,
    *,
    columns: ColumnMap | Mapping[str, str] | None = None,
    input_shape: str = "auto",
) -> tuple[pd.DataFrame, DataReport]:
    """Every pair of an input of either shape (no split): for scoring a whole file."""
    source, _ = read_source(path)
    pairs, report = _process(source, _column_map(columns), input_shape, drop_empty_answers)
    return pairs.table().to_pandas(), report


def prompt_key(prompts: pd.Series) -> pd.Series:
    """Prompts that differ only in case or whitespace are the same prompt for the split."""
    return prompts.map(_normalise)


def _test_keys(keys: list[str], test_size: float, seed: int, label: str = "") -> np.ndarray:
    """Which of the distinct normalised prompts are held out: the round(test_size * n) with the smallest seeded hash."""
    if len(keys) < 2:
        where = f"{label}: " if label else ""
        raise UserError(
            f"{where}need at least 2 distinct prompts to hold some out for evaluation (found {len(keys)}); "
            "add prompts or give a separate test file with test_path"
        )
    digest = np.array([hashlib.blake2b(f"{seed}\x00{k}".encode(), digest_size=8).hexdigest() for k in keys])
    n_test = min(max(1, round(test_size * len(keys))), len(keys) - 1)
    held_out = np.zeros(len(keys), dtype=bool)
    held_out[np.argsort(digest, kind="stable")[:n_test]] = True
    return held_out


def split_by_prompt(pairs: pd.DataFrame, test_size: float, seed: int) -> dict[str, pd.DataFrame]:
    """Seeded prompt-level split; independent of row order (prompts are ordered by a seeded hash)."""
    codes, keys = pd.factorize(prompt_key(pairs["prompt"]))
    is_test = _test_keys(list(keys), test_size, seed)[codes]
    return {"train": pairs[~is_test].reset_index(drop=True), "test": pairs[is_test].reset_index(drop=True)}


def build_dataset(
    dataset_path: str | Path,
    test_size: float,
    split_seed: int,
    drop_empty_answers: bool = True,
    *,
    columns: ColumnMap | Mapping[str, str] | None = None,
    input_shape: str = "auto",
    test_path: str | Path | None = None,
) -> tuple[DatasetDict, DataReport]:
    """Input -> validated pairs -> DatasetDict(train, test) and the report.

    The test split is a seeded prompt-level split of the input, unless a test set is given: `test_path`, or the
    `test` split of a saved DatasetDict / Hub dataset. Then train prompts that also occur in it are dropped.
    """
    columns = _column_map(columns)
    main, test_source = read_source(dataset_path)
    notes = []
    if test_path:
        if test_source is not None:
            notes.append(f"the test split of {dataset_path} is not used: test_path {test_path} replaces it")
        test_source, _ = read_source(test_path, role="test")
    test_pairs = test_report = exclude = None
    if test_source is not None:
        test_pairs, test_report = _process(test_source, columns, input_shape, drop_empty_answers)
        used = np.flatnonzero(np.bincount(test_pairs.key, minlength=len(test_pairs.keys)))
        exclude = {test_pairs.keys[i] for i in used}
    pairs, report = _process(main, columns, input_shape, drop_empty_answers, exclude)
    report.notes += notes
    if test_pairs is not None:
        report.test_file = test_report
        report.split_method = f"test set {test_source.label}; train prompts found in it are dropped"
        parts = {"train": (pairs, None), "test": (test_pairs, None)}
    else:
        held_out = _test_keys(pairs.keys, test_size, split_seed, report.source)[pairs.key]
        report.split_method = f"by prompt (case/whitespace-normalised), seed {split_seed}, test_size {test_size}"
        parts = {"train": (pairs, ~held_out), "test": (pairs, held_out)}
    recipe = json.dumps(
        [
            report.fingerprint,
            test_report and test_report.fingerprint,
            asdict(columns),
            input_shape,
            drop_empty_answers,
            test_size,
            split_seed,
            report.split_method,
        ]
    )
    splits = {}
    for name, (part, mask) in parts.items():
        keys = part.key if mask is None else part.key[mask]
        report.splits[name] = {"prompts": _distinct(keys), "pairs": len(keys)}
        # An explicit fingerprint: without one, datasets pickles the whole table to hash it (seconds, gigabytes).
        fingerprint = hashlib.sha256(f"q2-reward-data:{recipe}:{name}".encode()).hexdigest()[:16]
        splits[name] = Dataset(part.table(mask), fingerprint=fingerprint)
    return DatasetDict(splits), report


def save_dataset(dataset: DatasetDict, report: DataReport, output_dir: str | Path) -> None:
    """Write the DatasetDict and data_report.json atomically: a failure leaves no partial directory."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet = are_progress_bars_disabled()
    disable_progress_bars()  # "Saving the dataset" bars would fill stderr, where errors go
    try:
        with atomic_dir(output_dir) as staging:
            dataset.save_to_disk(str(staging))
            (staging / "data_report.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    finally:
        if not quiet:
            enable_progress_bars()


def data_options(script_args: Any) -> dict[str, Any]:
    """The build_dataset keyword arguments a recipe asks for (column mapping, input shape, test file)."""
    if script_args.input_shape not in SHAPES:
        raise UserError(f"input_shape must be one of {', '.join(SHAPES)} (got {script_args.input_shape!r})")
    return {
        "columns": ColumnMap.from_args(script_args),
        "input_shape": script_args.input_shape,
        "test_path": getattr(script_args, "test_path", None) or None,
    }


def dataset_hub_target(script_args: Any) -> str | None:
    """The Hub id to push the processed DatasetDict to, or None; checked before any work is done."""
    if not getattr(script_args, "dataset_push_to_hub", False):
        return None
    repo_id = getattr(script_args, "dataset_hub_id", None)
    if not repo_id:
        raise UserError("dataset_push_to_hub is true but dataset_hub_id is not set (e.g. your-name/preference-pairs)")
    return repo_id


def push_dataset(dataset: DatasetDict, repo_id: str, private: bool | None = None, kept_in: str | None = None) -> str:
    """DatasetDict.push_to_hub; any Hub failure is a one-line UserError (the local copy is kept)."""
    from pipeline.core.hub import hub_errors

    keep = f"the dataset is kept in {kept_in}; run again when the Hub is reachable" if kept_in else "try again later"
    with hub_errors(f"the dataset to {repo_id}", keep):
        commit = dataset.push_to_hub(
            repo_id, private=private, commit_message="Upload preference pairs made by q2-reward"
        )
    return str(getattr(commit, "commit_url", commit))


@cli_entry
def main(argv: list[str] | None = None) -> None:
    from pipeline.recipe.config import parse_recipe

    argv = list(sys.argv[1:] if argv is None else argv)
    # --output_dir here is the dataset's directory, not the recipe's model output_dir.
    output_dir = "data/processed"
    if "--output_dir" in argv:
        index = argv.index("--output_dir")
        if index + 1 >= len(argv):
            raise UserError("--output_dir needs a directory")
        output_dir = argv[index + 1]
        del argv[index : index + 2]
    script_args, training_args, _ = parse_recipe(argv)
    options = data_options(script_args)
    repo_id = dataset_hub_target(script_args)
    inputs = (script_args.dataset_path, script_args.test_path)
    check_replaceable(output_dir, ("dataset_dict.json", "data_report.json"), "--output_dir", inputs)
    dataset, report = build_dataset(
        script_args.dataset_path,
        script_args.test_size,
        script_args.split_seed,
        script_args.drop_empty_answers,
        **options,
    )
    save_dataset(dataset, report, output_dir)
    print(report.summary())
    print(f"saved DatasetDict to {output_dir}")
    if repo_id:
        url = push_dataset(dataset, repo_id, private=training_args.hub_private_repo, kept_in=output_dir)
        print(f"pushed the dataset to {url}")


if __name__ == "__main__":
    main()
