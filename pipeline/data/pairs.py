"""Preference pairs: prompt keys for the split, all C(K,2) pairs of a ranked prompt, and pairs kept as row indices
into the validated text columns until a split is materialised."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.core.errors import UserError
from pipeline.data.report import DataReport

MAX_PAIRS = 200_000_000  # all C(K,2) pairs of a prompt with K answers; beyond this the output would not fit anyway

_TAKE_BATCH = 1 << 20
_ODD_SPACE = "[\t\n\x0b\x0c\r\x1c-\x1f]|  |^ | $"  # prompts whose whitespace str.split() would change


def factorize(text: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Integer code per value (first appearance order) and the distinct values."""
    encoded = text.dictionary_encode()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def normalise(prompt: str) -> str:
    """Prompts that differ only in case or whitespace are the same prompt for the split."""
    return " ".join(prompt.split()).lower()


def prompt_keys(dictionary: pa.Array) -> tuple[np.ndarray, list[str]]:
    """Normalised key id for every distinct prompt, and the keys: `normalise`, vectorised where it is a lower()."""
    normalised = pc.ascii_lower(dictionary)
    odd = pc.or_(pc.match_substring_regex(dictionary, _ODD_SPACE), pc.invert(pc.string_is_ascii(dictionary)))
    other = np.flatnonzero(odd.to_numpy(zero_copy_only=False))
    if len(other):  # odd whitespace or non-ASCII case rules: Python's own, for those prompts only
        values = normalised.to_numpy(zero_copy_only=False)
        values[other] = [normalise(p) for p in dictionary.take(pa.array(other)).to_pylist()]
        normalised = pa.array(values, pa.large_string())
    key_of, keys = factorize(normalised)
    return key_of, keys.to_pylist()


def distinct(codes: np.ndarray) -> int:
    return int(np.count_nonzero(np.bincount(codes))) if len(codes) else 0


def _take(values: pa.Array, index: np.ndarray) -> pa.ChunkedArray:
    parts = [values.take(pa.array(index[i : i + _TAKE_BATCH])) for i in range(0, len(index), _TAKE_BATCH)]
    return pa.chunked_array(parts, values.type)


@dataclass
class Pairs:
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
class RankedRows:
    """Kept rows of a ranked source (indices into the source table), ready to be paired."""

    kept: np.ndarray
    prompt: pa.Array
    answer: pa.Array
    pid: np.ndarray
    prompt_key: np.ndarray  # normalised key id per prompt code
    keys: list[str]
    value_name: str
    value: np.ndarray


def pair_indices(pid: np.ndarray, order: np.ndarray, label: str = "") -> tuple[np.ndarray, np.ndarray, int]:
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


def ranked_pairs(rows: RankedRows, report: DataReport, label: str) -> Pairs:
    """Every ordered pair of a ranked source's kept rows; margin = the rank gap (or score gap)."""
    order = rows.value if rows.value_name == "rank" else -rows.value
    kept = rows.kept
    chosen, rejected, tied = pair_indices(rows.pid[kept], order[kept], label)
    chosen, rejected = kept[chosen], kept[rejected]
    report.tied_pairs_skipped = tied
    report.margin = "rank gap" if rows.value_name == "rank" else "score gap (higher score = better)"
    margin = order[rejected] - order[chosen]
    key = rows.prompt_key[rows.pid[chosen]]
    return Pairs(rows.prompt, rows.answer, rows.answer, chosen, chosen, rejected, margin, key, rows.keys)
