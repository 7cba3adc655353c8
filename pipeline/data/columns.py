"""Columns: which column plays which role (the one column finder), and a column as validated text or numbers."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.errors import UserError
from pipeline.data.sources import SourceTable

SHAPES = ("auto", "ranked", "pairwise")

_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_ROLE_KEYS = {role: f"{role}_column" for role in ("prompt", "answer", "rank", "score", "chosen", "rejected", "margin")}


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


def column_map(columns: ColumnMap | Mapping[str, str] | None) -> ColumnMap:
    """A ColumnMap from None (the defaults), a ColumnMap or a mapping of roles ('prompt' or 'prompt_column')."""
    if columns is None:
        return ColumnMap()
    if isinstance(columns, ColumnMap):
        return columns
    known = {f.name for f in fields(ColumnMap)}
    unknown = [k for k in columns if k.removesuffix("_column") not in known]
    if unknown:
        raise UserError(f"unknown column role(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return ColumnMap(**{k.removesuffix("_column"): v for k, v in columns.items()})


def find_column(names: Sequence[str], *wanted: str, label: str | None = None) -> int | None:
    """Position of the column named like the first of `wanted` that is there, or None.

    An exact name wins over one that differs only in case or surrounding whitespace (a spreadsheet's "Prompt" or
    " rank " still counts). With `label` (the file, for the message), a name matched twice is a one-line error.
    """
    loose = [name.strip().casefold() for name in names]
    for exact in (True, False):
        for want in wanted:
            key = want if exact else want.strip().casefold()
            hits = [i for i, name in enumerate(names if exact else loose) if name == key]
            if len(hits) > 1 and label is not None:
                raise UserError(
                    f"{label}: column {want!r} appears {len(hits)} times in the header; rename all but one of them"
                )
            if hits:
                return hits[0]
    return None


def resolve_columns(source: SourceTable, columns: ColumnMap, shape: str) -> tuple[str, dict[str, int]]:
    """Shape (ranked or pairwise) and role -> column index; a missing or ambiguous column is a one-line error."""
    names = source.table.column_names

    def find(role: str) -> int | None:
        wanted = getattr(columns, role)
        return find_column(names, wanted, label=source.label) if wanted else None

    if shape not in SHAPES:
        raise UserError(f"input_shape must be one of {', '.join(SHAPES)} (got {shape!r})")
    if shape == "auto":
        pairwise = find("chosen") is not None or find("rejected") is not None
        shape = "pairwise" if pairwise and find("answer") is None else "ranked"
    roles = ["prompt", "answer"] if shape == "ranked" else ["prompt", "chosen", "rejected"]
    found = {role: index for role in roles if (index := find(role)) is not None}
    missing = [role for role in roles if role not in found]
    if shape == "ranked":
        rank, score = find("rank"), find("score")
        if rank is not None and score is not None:
            raise UserError(
                f"{source.label}: has both a {names[rank]!r} and a {names[score]!r} column; keep one, or set "
                "score_column: '' (to rank by rank) or rank_column: '' (to rank by score) in the recipe"
            )
        if score is not None:
            found["score"] = score
        elif rank is not None:
            found["rank"] = rank
        else:
            missing.append("rank")
    elif (margin := find("margin")) is not None:
        found["margin"] = margin
    if missing:
        raise _missing_columns(source.label, names, columns, shape, found, missing)
    return shape, found


def _missing_columns(
    label: str, names: list[str], columns: ColumnMap, shape: str, found: dict[str, int], missing: list[str]
) -> UserError:
    """The error for missing roles: what is needed, a close spare column name as a guess, the recipe keys to map."""
    used = {names[i] for i in found.values()}
    spare = [n for n in names if n not in used]
    folded = [n.casefold() for n in spare]
    parts = []
    for role in missing:
        wanted = getattr(columns, role) or role
        text = wanted + (" (or score)" if role == "rank" and columns.score else "")
        guess = difflib.get_close_matches(wanted.casefold(), folded, n=1, cutoff=0.6)
        if role == "rank" and not guess and columns.score:
            guess = difflib.get_close_matches(columns.score.casefold(), folded, 1, 0.6)
        if guess:
            text += f"; did you mean {spare[folded.index(guess[0])]!r}?"
        parts.append(text)
    needs = (
        "prompt, answer and rank (or score)" if shape == "ranked" else "prompt, chosen and rejected (margin optional)"
    )
    keys = ", ".join(f"{_ROLE_KEYS[r]}" for r in missing)
    plural = len(missing) > 1
    return UserError(
        f"{label}: missing column{'s' if plural else ''} {', '.join(parts)} "
        f"(found {', '.join(map(repr, names)) or 'none'}); a {shape} file needs {needs}: rename the "
        f"column{'s' if plural else ''} in the file or map {'them' if plural else 'it'} in the recipe ({keys})"
    )


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


def not_text_error(label: str, where: str, name: str) -> UserError:
    """A list or object where text is needed (the same message for every reader and command)."""
    return UserError(
        f"{label}: {where}: column {name!r} holds a list or object, not text (nor a list of {{'role', 'content'}} "
        "messages); give plain text or messages"
    )


def plain_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A column as plain values: dictionary-encoded ones (pandas `category`) decoded, views (`string_view`) as
    ordinary strings."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    views = {"string_view": pa.large_string(), "binary_view": pa.large_binary()}
    if str(column.type) in views:
        column = column.cast(views[str(column.type)])
    return column


def text_column(source: SourceTable, index: int) -> pa.Array:
    """A column as one validated large_string array without nulls (null -> '')."""
    column = plain_column(source.table.column(index))
    name = source.table.column_names[index]
    if name in source.nested:
        raise not_text_error(source.label, source.where(source.nested[name]), name)
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        chunks = [c.view(pa.binary() if pa.types.is_string(kind) else pa.large_binary()) for c in column.chunks]
    elif pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        chunks = list(column.chunks)
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
        chunks = [c.cast(pa.large_string()) for c in column.chunks]
    elif pa.types.is_null(kind):
        chunks = [pa.nulls(len(c), pa.large_string()) for c in column.chunks]
    elif pa.types.is_nested(kind):
        first = pc.index(pc.is_valid(column), True).as_py()
        raise not_text_error(source.label, source.where(max(first, 0)), name)
    else:
        raise UserError(f"{source.label}: column {name!r} holds {kind} values, not text; give plain text")
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


def _show(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def number_column(source: SourceTable, index: int, role: str, skip: np.ndarray | None = None) -> np.ndarray:
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
        raw = text_column(source, index)
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
