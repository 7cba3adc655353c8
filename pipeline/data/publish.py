"""Where the dataset goes: the recipe's data options, the saved directory (with its report) and the Hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import DatasetDict

from pipeline.core.errors import UserError
from pipeline.core.files import atomic_dir
from pipeline.data.columns import SHAPES, ColumnMap
from pipeline.data.report import DataReport


def data_options(script_args: Any) -> dict[str, Any]:
    """The build_dataset keyword arguments a recipe asks for (column mapping, input shape, test file)."""
    if script_args.input_shape not in SHAPES:
        raise UserError(f"input_shape must be one of {', '.join(SHAPES)} (got {script_args.input_shape!r})")
    return {
        "columns": ColumnMap.from_args(script_args),
        "input_shape": script_args.input_shape,
        "test_path": getattr(script_args, "test_path", None) or None,
    }


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


def dataset_hub_target(script_args: Any) -> str | None:
    """The Hub id to push the processed DatasetDict to, or None; checked before any work is done."""
    if not getattr(script_args, "dataset_push_to_hub", False):
        return None
    repo_id = getattr(script_args, "dataset_hub_id", None)
    if not repo_id:
        raise UserError("dataset_push_to_hub is true but dataset_hub_id is not set (e.g. your-name/preference-pairs)")
    return repo_id


def push_dataset(
    dataset: DatasetDict,
    repo_id: str,
    private: bool | None = None,
    kept_in: str | None = None,
    token: str | None = None,
) -> str:
    """DatasetDict.push_to_hub (with `token`, else the environment's); any Hub failure is a one-line UserError (the
    local copy is kept)."""
    from pipeline.core.hub import hub_errors

    keep = f"the dataset is kept in {kept_in}; run again when the Hub is reachable" if kept_in else "try again later"
    with hub_errors(f"the dataset to {repo_id}", keep):
        commit = dataset.push_to_hub(
            repo_id, private=private, token=token or None, commit_message="Upload preference pairs made by q2-reward"
        )
    return str(getattr(commit, "commit_url", commit))
