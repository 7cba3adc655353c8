"""Building the dataset: validated pairs of the input (and of a test set, if one is given) -> a prompt-level
train/test DatasetDict with stable fingerprints; `read_pairs` gives every pair of one input, unsplit."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict

from pipeline.core.errors import UserError
from pipeline.data.columns import ColumnMap, column_map
from pipeline.data.pairs import Pairs, distinct
from pipeline.data.report import DataReport
from pipeline.data.sources import SourceTable, read_source
from pipeline.data.validation import validate


def read_pairs(
    path: str | Path,
    drop_empty_answers: bool = True,
    *,
    columns: ColumnMap | Mapping[str, str] | None = None,
    input_shape: str = "auto",
    role: str = "main",
) -> tuple[pd.DataFrame, DataReport]:
    """Read every preference pair of an input of either shape, validated as for training, without a split.

    For scoring or evaluating a whole file. A saved DatasetDict gives its train split, or with `role="test"` its
    test split (or its only split).

    Args:
        path (`str` or `Path`):
            A CSV, TSV, JSON Lines or Parquet file, a `save_to_disk` directory or a Hub dataset id.
        drop_empty_answers (`bool`, *optional*, defaults to `True`):
            Drop (and count) rows whose answer is empty; `False`: they are an error.
        columns (`ColumnMap` or `Mapping[str, str]`, *optional*):
            The input's column names where they differ from `prompt`, `answer`, `rank`, `chosen`, ...
        input_shape (`str`, *optional*, defaults to `"auto"`):
            `"ranked"`, `"pairwise"` or `"auto"` (pairwise when there are chosen/rejected columns and no answer).
        role (`str`, *optional*, defaults to `"main"`):
            `"test"` reads a saved DatasetDict's test split.

    Returns:
        `tuple[pd.DataFrame, DataReport]`: the pairs (columns `prompt`, `chosen`, `rejected`, `margin`) and the
        report of what was kept and dropped.

    Raises:
        `UserError`: a missing file or column, or a bad value, with one line naming it (and its row).

    Example:

    ```python
    >>> from pipeline.data import read_pairs
    >>> pairs, report = read_pairs("data/answers.csv")
    >>> pairs.columns.tolist()
    ['prompt', 'chosen', 'rejected', 'margin']
    ```
    """
    source, _ = read_source(path, role=role)
    pairs, report = validate(source, column_map(columns), input_shape, drop_empty_answers)
    return pairs.table().to_pandas(), report


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
    """Build the training data: the input's validated preference pairs, split by prompt into train and test.

    Args:
        dataset_path (`str` or `Path`):
            A CSV, TSV, JSON Lines or Parquet file, a `save_to_disk` directory or a Hub dataset id.
        test_size (`float`):
            The fraction of prompts held out for evaluation (ignored when a test set is given).
        split_seed (`int`):
            The seed of the prompt-level split.
        drop_empty_answers (`bool`, *optional*, defaults to `True`):
            Drop (and count) rows whose answer is empty; `False`: they are an error.
        columns (`ColumnMap` or `Mapping[str, str]`, *optional*):
            The input's column names where they differ from `prompt`, `answer`, `rank`, `chosen`, ...
        input_shape (`str`, *optional*, defaults to `"auto"`):
            `"ranked"`, `"pairwise"` or `"auto"` (pairwise when there are chosen/rejected columns and no answer).
        test_path (`str` or `Path`, *optional*):
            A separate test set, which replaces the seeded split (as does the `test` split of a saved DatasetDict or
            Hub dataset); train prompts that also occur in the test set are dropped.

    Returns:
        `tuple[DatasetDict, DataReport]`: the `train` and `test` splits (TRL's preference format: columns `prompt`,
        `chosen`, `rejected`, `margin`) and the report of what was kept, dropped and split.

    Raises:
        `UserError`: a missing file or column, a bad value, or too few prompts to split.

    Example:

    ```python
    >>> from pipeline.data import build_dataset
    >>> dataset, report = build_dataset("data/answers.csv", test_size=0.2, split_seed=42)
    >>> sorted(dataset), dataset["train"].column_names
    (['test', 'train'], ['prompt', 'chosen', 'rejected', 'margin'])
    ```
    """
    columns = column_map(columns)
    main, saved_test = read_source(dataset_path)
    test, notes = _test_set(dataset_path, test_path, saved_test, columns, input_shape, drop_empty_answers)
    pairs, report = validate(main, columns, input_shape, drop_empty_answers, None if test is None else test.exclude)
    report.notes += notes
    if test is not None:
        report.test_file = test.report
        report.split_method = f"test set {test.source.label}; train prompts found in it are dropped"
        parts = {"train": (pairs, None), "test": (test.pairs, None)}
    else:
        parts = _split_by_prompt(pairs, report, test_size, split_seed)
    recipe = [report.fingerprint, None if test is None else test.report.fingerprint, asdict(columns), input_shape]
    recipe += [drop_empty_answers, test_size, split_seed, report.split_method]
    return _splits(parts, report, json.dumps(recipe)), report


class _TestSet(NamedTuple):
    source: SourceTable
    pairs: Pairs
    report: DataReport
    exclude: set[str]  # its normalised prompts that kept a pair: train pairs of these prompts are dropped


def _test_set(
    dataset_path: str | Path,
    test_path: str | Path | None,
    saved_test: SourceTable | None,
    columns: ColumnMap,
    input_shape: str,
    drop_empty_answers: bool,
) -> tuple[_TestSet | None, list[str]]:
    """The given test set, validated (test_path, which replaces the input's saved test split, or that split), or
    None; and the report's note when test_path replaces a saved split."""
    notes = []
    if test_path:
        if saved_test is not None:
            notes.append(f"the test split of {dataset_path} is not used: test_path {test_path} replaces it")
        saved_test, _ = read_source(test_path, role="test")
    if saved_test is None:
        return None, notes
    test_pairs, test_report = validate(saved_test, columns, input_shape, drop_empty_answers)
    used = np.flatnonzero(np.bincount(test_pairs.key, minlength=len(test_pairs.keys)))
    return _TestSet(saved_test, test_pairs, test_report, {test_pairs.keys[i] for i in used}), notes


def _split_by_prompt(
    pairs: Pairs, report: DataReport, test_size: float, split_seed: int
) -> dict[str, tuple[Pairs, np.ndarray]]:
    """The seeded prompt-level split of one input's pairs: train and test masks, the method noted in the report."""
    # Only prompts that kept a pair take part: one whose rows were all dropped would take a split's place.
    used = np.flatnonzero(np.bincount(pairs.key, minlength=len(pairs.keys)))
    held = np.zeros(len(pairs.keys), dtype=bool)
    held[used] = _test_keys([pairs.keys[i] for i in used], test_size, split_seed, report.source)
    held_out = held[pairs.key]
    report.split_method = f"by prompt (case/whitespace-normalised), seed {split_seed}, test_size {test_size}"
    return {"train": (pairs, ~held_out), "test": (pairs, held_out)}


def _splits(parts: dict[str, tuple[Pairs, np.ndarray | None]], report: DataReport, recipe: str) -> DatasetDict:
    """One Dataset per split (its pairs, or those under a mask), counted in the report."""
    splits = {}
    for name, (part, mask) in parts.items():
        keys = part.key if mask is None else part.key[mask]
        report.splits[name] = {"prompts": distinct(keys), "pairs": len(keys)}
        # An explicit fingerprint: without one, datasets pickles the whole table to hash it (seconds, gigabytes).
        fingerprint = hashlib.sha256(f"q2-reward-data:{recipe}:{name}".encode()).hexdigest()[:16]
        splits[name] = Dataset(part.table(mask), fingerprint=fingerprint)
    return DatasetDict(splits)
