"""Building the dataset: validated pairs of the input (and of a test set, if one is given) -> a prompt-level
train/test DatasetDict with stable fingerprints; `read_pairs` gives every pair of one input, unsplit."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict

from pipeline.core.errors import UserError
from pipeline.data.columns import ColumnMap, column_map
from pipeline.data.pairs import Pairs, distinct
from pipeline.data.report import DataReport
from pipeline.data.sources import read_source
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

    The test split is a seeded prompt-level split of the input, unless a test set is given: `test_path`, or the
    `test` split of a saved DatasetDict / Hub dataset. Then train prompts that also occur in it are dropped.

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
            A separate test set, which replaces the split.

    Returns:
        `tuple[DatasetDict, DataReport]`: the `train` and `test` splits (columns `prompt`, `chosen`, `rejected`,
        `margin`, in TRL's preference format) and the report of what was kept, dropped and split.

    Raises:
        `UserError`: a missing file or column, a bad value, or too few prompts to split, in one line.

    Example:

    ```python
    >>> from pipeline.data import build_dataset
    >>> dataset, report = build_dataset("data/answers.csv", test_size=0.2, split_seed=42)
    >>> sorted(dataset), dataset["train"].column_names
    (['test', 'train'], ['prompt', 'chosen', 'rejected', 'margin'])
    ```
    """
    columns = column_map(columns)
    main, test_source = read_source(dataset_path)
    notes = []
    if test_path:
        if test_source is not None:
            notes.append(f"the test split of {dataset_path} is not used: test_path {test_path} replaces it")
        test_source, _ = read_source(test_path, role="test")
    test_pairs = test_report = exclude = None
    if test_source is not None:
        test_pairs, test_report = validate(test_source, columns, input_shape, drop_empty_answers)
        used = np.flatnonzero(np.bincount(test_pairs.key, minlength=len(test_pairs.keys)))
        exclude = {test_pairs.keys[i] for i in used}
    pairs, report = validate(main, columns, input_shape, drop_empty_answers, exclude)
    report.notes += notes
    if test_pairs is not None:
        report.test_file = test_report
        report.split_method = f"test set {test_source.label}; train prompts found in it are dropped"
        parts = {"train": (pairs, None), "test": (test_pairs, None)}
    else:
        # Only prompts that kept a pair take part: one whose rows were all dropped would take a split's place.
        used = np.flatnonzero(np.bincount(pairs.key, minlength=len(pairs.keys)))
        held = np.zeros(len(pairs.keys), dtype=bool)
        held[used] = _test_keys([pairs.keys[i] for i in used], test_size, split_seed, report.source)
        held_out = held[pairs.key]
        report.split_method = f"by prompt (case/whitespace-normalised), seed {split_seed}, test_size {test_size}"
        parts = {"train": (pairs, ~held_out), "test": (pairs, held_out)}
    recipe = [report.fingerprint, test_report and test_report.fingerprint, asdict(columns), input_shape]
    recipe += [drop_empty_answers, test_size, split_seed, report.split_method]
    return _splits(parts, report, json.dumps(recipe)), report


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
