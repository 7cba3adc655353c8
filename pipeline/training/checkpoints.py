"""Resume after a crash: find the last complete checkpoint of the same run, or refuse to mix two runs.

Checkpoints live in a hidden sibling of output_dir (`.reward_model.checkpoints/`), with `run.json` naming the recipe
and data they belong to. A checkpoint counts only once every process has finished writing it (`COMPLETE` marker),
so a run killed in the middle of saving resumes from the one before.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.files import atomic_file

COMPLETE = "q2_checkpoint_complete"
RUN_FILE = "run.json"
# Keys that change nothing about the trained weights: a rerun with these changed still resumes.
NOT_PART_OF_THE_RUN = {
    "output_dir", "logging_dir", "logging_steps", "logging_first_step", "logging_strategy", "report_to", "run_name",
    "disable_tqdm", "push_to_hub", "hub_model_id", "hub_private_repo", "hub_strategy", "hub_token",
    "resume_from_checkpoint", "save_strategy", "save_steps", "save_total_limit", "overwrite_output_dir",
    "force_push", "min_accuracy", "dataset_push_to_hub", "dataset_hub_id", "eval_batch_size",
    "reward_stats_max_answers", "baseline_max_pairs", "dataloader_num_workers", "dataloader_pin_memory", "local_rank",
}  # fmt: skip


def checkpoint_dir_for(output_dir: Path) -> Path:
    return output_dir.resolve().parent / f".{output_dir.name}.checkpoints"


def run_identity(recipe: dict[str, Any], data_fingerprint: str) -> dict[str, Any]:
    """What must be equal for a checkpoint to continue this run: training keys and the exact input data."""
    keys = {k: _jsonable(v) for k, v in sorted(recipe.items()) if k not in NOT_PART_OF_THE_RUN}
    return {"recipe": keys, "data_fingerprint": data_fingerprint}


def dataset_fingerprint(dataset: Any) -> str:
    """The splits' fingerprints (the data step derives them from the input file's sha256 and its options)."""
    return ",".join(f"{name}:{split._fingerprint}" for name, split in sorted(dataset.items()))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def complete_checkpoints(directory: Path) -> list[Path]:
    """Complete `checkpoint-N` folders, oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and (path / COMPLETE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def resume_point(directory: Path, identity: dict[str, Any], explicit: str | None) -> Path | None:
    """The checkpoint to resume from, or None to start fresh.

    `explicit` (the recipe's resume_from_checkpoint) wins: a path is used as given. Otherwise the last complete
    checkpoint in `directory` is used when it belongs to the same run; checkpoints of a different run are an error
    rather than silently discarded (they may be someone's day of training).
    """
    if explicit:
        path = Path(explicit)
        if not path.is_dir():
            raise UserError(f"resume_from_checkpoint {explicit}: no such checkpoint directory")
        return path
    checkpoints = complete_checkpoints(directory)
    if not checkpoints:
        return None
    run_file = directory / RUN_FILE
    saved = json.loads(run_file.read_text()) if run_file.is_file() else None
    if saved != identity:
        what = _difference(saved, identity)
        raise UserError(
            f"{directory} holds checkpoints of a different run ({what}); to resume it, rerun with its recipe; to "
            f"start over, delete {directory}; to start from one of them anyway, set resume_from_checkpoint: "
            f"{checkpoints[-1]}"
        )
    return checkpoints[-1]


def _difference(saved: dict[str, Any] | None, current: dict[str, Any]) -> str:
    if not saved:
        return "no run.json"
    if saved.get("data_fingerprint") != current["data_fingerprint"]:
        return "the input data changed"
    old, new = saved.get("recipe", {}), current["recipe"]
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return "recipe keys differ: " + ", ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:3])


def write_run_file(directory: Path, identity: dict[str, Any]) -> None:
    with atomic_file(directory / RUN_FILE) as staging:
        staging.write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n")


def delete_old_checkpoints(run_dir: Path, keep: int | None, step: int) -> None:
    """Keep the newest `keep` complete checkpoints; drop older ones and torn ones from before `step`."""
    complete = complete_checkpoints(run_dir)
    doomed = complete[:-keep] if keep and keep > 0 else []
    for path in run_dir.glob("checkpoint-*"):
        number = path.name.removeprefix("checkpoint-")
        if path not in complete and number.isdigit() and int(number) < step:
            doomed.append(path)  # torn by an earlier crash: never resumable
    for path in doomed:
        (path / COMPLETE).unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)
