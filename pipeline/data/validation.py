"""Validation: a source table of either shape becomes preference pairs and a report. Empty rows, prompts with one
answer, repeats and contradictions are counted drops; a bad value or a conflicting repeat is a one-line error naming
the row (the policy is in docs/data.md, "What is kept, dropped or refused")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.errors import UserError
from pipeline.data.columns import ColumnMap, number_column, resolve_columns, text_column
from pipeline.data.conversation import render_source
from pipeline.data.pairs import Pairs, RankedRows, distinct, factorize, prompt_keys, ranked_pairs
from pipeline.data.report import DataReport
from pipeline.data.sources import SourceTable


def validate(
    source: SourceTable,
    columns: ColumnMap,
    input_shape: str,
    drop_empty_answers: bool,
    exclude: set[str] | None = None,
) -> tuple[Pairs, DataReport]:
    """The pairs of a source and its report; rows whose normalised prompt is in `exclude` are dropped."""
    source = render_source(source, columns)  # TRL's conversational formats become their rendered text
    shape, found = resolve_columns(source, columns, input_shape)
    if shape == "pairwise":
        pairs, report = _pairwise(source, found, drop_empty_answers, exclude)
    else:
        rows, report = _ranked(source, found, drop_empty_answers, exclude)
        pairs = ranked_pairs(rows, report, source.label)
    source.release()
    if len(pairs) == 0:
        raise UserError(f"{source.label}: no preference pairs (every prompt's answers share one rank)")
    report.pairs = len(pairs)
    report.prompts = distinct(pairs.key)
    return pairs, report


def _blank(text: pa.Array) -> np.ndarray:
    return pc.or_(pc.equal(pc.binary_length(text), 0), pc.utf8_is_space(text)).to_numpy(zero_copy_only=False)


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


def _exclude(
    report: DataReport, keep: np.ndarray, pid: np.ndarray, keys: list[str], key_of: np.ndarray, exclude: set[str] | None
) -> None:
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
    distinct_values = dup.groupby(by, sort=False)[value].transform("nunique")
    conflicting = dup[distinct_values.to_numpy() > 1]
    if conflicting.empty:
        return None
    first = conflicting.iloc[0]
    same = (conflicting[by] == first[by]).all(axis=1).to_numpy()
    return conflicting.index.to_numpy()[same]


def _drop_duplicates(
    source: SourceTable,
    report: DataReport,
    keep: np.ndarray,
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
    duplicate = np.zeros(len(keep), dtype=bool)
    duplicate[frame.index.to_numpy()] = frame.duplicated(by).to_numpy()
    _drop_rows(report, keep, duplicate, "duplicate_row")


def _new_report(source: SourceTable, shape: str, found: dict[str, int]) -> DataReport:
    """The report of a source that has rows (one without is an error)."""
    if source.num_rows == 0:
        has_header = source.kind in ("csv", "tsv")
        raise UserError(f"{source.label}: {'has a header but no rows' if has_header else 'has no rows'}")
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


def _check_kept(source: SourceTable, report: DataReport, keep: np.ndarray) -> np.ndarray:
    if not keep.any():
        raise UserError(f"{source.label}: every row was dropped ({report.row_counts()})")
    kept = np.flatnonzero(keep)
    report.rows_kept = len(kept)
    return kept


def _ranked(
    source: SourceTable, found: dict[str, int], drop_empty_answers: bool, exclude: set[str] | None = None
) -> tuple[RankedRows, DataReport]:
    report = _new_report(source, "ranked", found)
    prompt, answer = text_column(source, found["prompt"]), text_column(source, found["answer"])
    blank_prompt, blank_answer = _blank(prompt), _blank(answer)
    empty_row = blank_prompt & blank_answer  # e.g. the trailing ",," lines of a spreadsheet export
    value_name = "rank" if "rank" in found else "score"
    value = number_column(source, found[value_name], value_name, skip=empty_row)
    keep = np.ones(source.num_rows, dtype=bool)
    _drop_rows(report, keep, empty_row, "empty_row")
    _drop_rows(report, keep, blank_prompt, "empty_prompt")
    _check_empty(source, report, keep, blank_answer, drop_empty_answers, "answer")
    pid, prompts = factorize(prompt)
    key_of, keys = prompt_keys(prompts)
    _exclude(report, keep, pid, keys, key_of, exclude)

    # The same answer twice under one prompt: identical value = harmless duplicate, different value = contradiction.
    index = _maybe_equal(keep, pid, [answer])
    aid, _ = factorize(answer.take(pa.array(index)))
    frame = pd.DataFrame({"p": pid[index], "a": aid, "v": value[index]}, index=index)
    _drop_duplicates(source, report, keep, frame, ["p", "a"], "v", f"prompt and answer have different {value_name}s")

    counts = np.bincount(pid[keep], minlength=len(prompts))
    _drop_rows(report, keep, counts[pid] < 2, "prompt_with_one_answer")

    index = np.flatnonzero(keep)
    spread = pd.Series(value[index]).groupby(pid[index]).agg(["min", "max"])
    all_tied = np.zeros(len(prompts), dtype=bool)
    all_tied[spread.index.to_numpy()] = (spread["min"] == spread["max"]).to_numpy()
    _drop_rows(report, keep, all_tied[pid], "prompt_all_answers_tied")

    kept = _check_kept(source, report, keep)
    return RankedRows(kept, prompt, answer, pid, key_of, keys, value_name, value), report


def _pairwise(
    source: SourceTable, found: dict[str, int], drop_empty_answers: bool, exclude: set[str] | None = None
) -> tuple[Pairs, DataReport]:
    report = _new_report(source, "pairwise", found)
    n = source.num_rows
    prompt = text_column(source, found["prompt"])
    chosen, rejected = text_column(source, found["chosen"]), text_column(source, found["rejected"])
    blank_prompt, blank_chosen, blank_rejected = _blank(prompt), _blank(chosen), _blank(rejected)
    empty_row = blank_prompt & blank_chosen & blank_rejected
    if "margin" in found:
        margin = number_column(source, found["margin"], "margin", skip=empty_row)
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
    pid, prompts = factorize(prompt)
    key_of, keys = prompt_keys(prompts)
    _exclude(report, keep, pid, keys, key_of, exclude)

    index = _maybe_equal(keep, pid, [chosen, rejected])
    codes, _ = factorize(pa.concat_arrays([chosen.take(pa.array(index)), rejected.take(pa.array(index))]))
    frame = pd.DataFrame(
        {"p": pid[index], "c": codes[: len(index)], "r": codes[len(index) :], "m": margin[index]}, index=index
    )
    _drop_duplicates(
        source, report, keep, frame, ["p", "c", "r"], "m", "prompt, chosen and rejected have different margins"
    )
    # A > B and B > A under one prompt (annotators disagree): no usable preference, both rows go.
    frame = frame[keep[frame.index.to_numpy()]]
    both = frame.reset_index().merge(frame, left_on=["p", "c", "r"], right_on=["p", "r", "c"])["index"]
    contradicting = np.zeros(n, dtype=bool)
    contradicting[both.to_numpy()] = True
    _drop_rows(report, keep, contradicting, "contradicting_pair")

    kept = _check_kept(source, report, keep)
    return Pairs(prompt, chosen, rejected, kept, kept, kept, margin[kept], key_of[pid[kept]], keys), report
