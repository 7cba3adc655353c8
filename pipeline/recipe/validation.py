"""One validation of every key a user can type, before any work: one line naming the key, its value, where it came
from and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from trl import ModelConfig

from pipeline.core.errors import UserError, one_line
from pipeline.recipe.config import PipelineRewardConfig


@dataclass
class KeySources:
    """Where each key's value came from, so that an error names the recipe file or the command line."""

    recipe: str | None
    on_command_line: set[str]

    def where(self, key: str) -> str:
        if key in self.on_command_line or self.recipe is None:
            return f"command line: --{key}"
        return f"recipe {self.recipe}: {key}"

    @property
    def source(self) -> str:
        return f"recipe {self.recipe}" if self.recipe else "command line"


def check_trainer_keys(args: PipelineRewardConfig, sources: KeySources) -> None:
    """Settings the trainer itself would refuse only once the data is ready: its optimizer, compiler backend, FSDP."""
    from accelerate.utils import DynamoBackend
    from transformers import Trainer

    try:
        Trainer.get_optimizer_cls_and_kwargs(args)
    except (ImportError, ValueError) as err:  # a missing optional package (bitsandbytes...) or a bad optim_args
        key = "optim_args" if args.optim_args else "optim"
        value = getattr(args, key)
        raise UserError(
            f"{sources.where(key)} {getattr(value, 'value', value)!r} cannot be used: {one_line(err)}"
        ) from err
    backends = [backend.value.lower() for backend in DynamoBackend]
    backend = args.torch_compile_backend
    if backend and backend.lower() not in backends:
        raise UserError(
            f"{sources.where('torch_compile_backend')} must be one of {', '.join(backends)} (got {backend!r})"
        )
    if args.fsdp and args.world_size == 1:
        raise UserError(f"{sources.where('fsdp')} needs several processes (accelerate launch --num_processes N)")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Checks:
    """The one-line refusals of `validate`: `require(key, ok, allowed)` names the key, where it came from, what is
    allowed and the value it got."""

    def __init__(self, values: Mapping[str, Any], sources: KeySources) -> None:
        self.values = values
        self.sources = sources

    def require(self, key: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise UserError(f"{self.sources.where(key)} must be {allowed} (got {self.values.get(key)!r})")

    def number(self, key: str, low: float, low_allowed: bool = True) -> None:
        value = self.values[key]
        ok = _finite(value) and (value >= low if low_allowed else value > low)
        self.require(key, ok, f"a number {'>=' if low_allowed else '>'} {low:g}")


def validate(values: Mapping[str, Any], sources: KeySources) -> None:
    """Every key a user can type, checked before any work: one line naming the key, its value and what is allowed.

    The checks run in a fixed order, so that of several bad keys the same one is always named first.
    """
    checks = _Checks(values, sources)
    _check_names_and_choices(checks)
    _check_sizes_and_seeds(checks)
    _check_optimization(checks)
    _check_saving_and_extras(checks)
    _check_unused_model_keys(values, sources)
    _check_push_targets(checks)


def _check_names_and_choices(checks: _Checks) -> None:
    """The paths and names, the split, and the keys that take one of a few words."""
    values, require = checks.values, checks.require
    for key, example in (
        ("dataset_path", "data/answers.csv"),
        ("output_dir", "reward_model"),
        ("model_name_or_path", "embedded:all-MiniLM-L6-v2"),
    ):
        value = values[key]
        require(key, isinstance(value, str) and bool(value.strip()), f"a non-blank path or name, e.g. {example}")
    test_size = values["test_size"]
    require("test_size", _finite(test_size) and 0.0 < test_size < 1.0, "between 0 and 1 (exclusive)")
    require("objective", values["objective"] in ("pairwise", "ranking"), "'pairwise' or 'ranking'")
    require("input_shape", values["input_shape"] in ("auto", "ranked", "pairwise"), "'auto', 'ranked' or 'pairwise'")
    require("truncation_side", values["truncation_side"] in ("left", "right"), "'left' or 'right'")


def _check_sizes_and_seeds(checks: _Checks) -> None:
    """The length of an input, the accuracy gate, the batch and sample sizes, the seeds."""
    values, require = checks.values, checks.require
    # DistilBERT has 512 position embeddings; longer inputs crash inside the model.
    max_length = values["max_length"]
    require("max_length", _integer(max_length) and 8 <= max_length <= 512, "between 8 and 512")
    min_accuracy = values["min_accuracy"]
    require("min_accuracy", _finite(min_accuracy) and 0.0 <= min_accuracy <= 1.0, "between 0 and 1")
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "eval_batch_size",
                "reward_stats_max_answers", "baseline_max_pairs", "per_device_eval_batch_size"):  # fmt: skip
        require(key, _integer(values[key]) and values[key] >= 1, "an integer >= 1")
    for key in ("split_seed", "seed"):  # numpy's generators take 0 .. 2**32 - 1
        require(key, _integer(values[key]) and 0 <= values[key] < 2**32, "an integer from 0 to 4294967295")


def _check_optimization(checks: _Checks) -> None:
    """The learning rate, the length of training, and the optimizer's numbers."""
    values, require, number = checks.values, checks.require, checks.number
    number("learning_rate", 0, low_allowed=False)
    require("min_train_steps", _integer(values["min_train_steps"]) and values["min_train_steps"] >= 0,
            "an integer >= 0 (0 = off)")  # fmt: skip
    max_steps = values["max_steps"]
    require("max_steps", _integer(max_steps) and (max_steps == -1 or max_steps >= 1),
            "a number of steps >= 1, or -1 to train num_train_epochs")  # fmt: skip
    if max_steps == -1:  # 0 epochs would save the untrained model as the result
        epochs = values["num_train_epochs"]
        require("num_train_epochs", _finite(epochs) and epochs > 0, "a number > 0 (or set max_steps)")
    for key in ("warmup_steps", "weight_decay", "max_grad_norm"):
        number(key, 0)
    number("adam_epsilon", 0, low_allowed=False)


def _check_saving_and_extras(checks: _Checks) -> None:
    """Checkpoints and logging, the trainer's strategies, the data workers, the loss extras and the reporting."""
    values, require, number = checks.values, checks.require, checks.number
    for key in ("save_steps", "logging_steps"):  # below 1: a fraction of the total steps
        number(key, 0, low_allowed=False)
    limit = values["save_total_limit"]
    require("save_total_limit", limit is None or (_integer(limit) and limit >= 1), "an integer >= 1")
    require("dataloader_num_workers", values["dataloader_num_workers"] >= 0, "an integer >= 0")
    # The trainer gets no eval set: the exact held-out evaluation runs once, after training.
    require("eval_strategy", values["eval_strategy"] == "no", "'no' (the held-out evaluation runs after training)")
    require("save_strategy", values["save_strategy"] in ("no", "steps", "epoch"), "'no', 'steps' or 'epoch'")
    require("train_sampling_strategy", values["train_sampling_strategy"] in ("group_by_length", "random"),
            "'group_by_length' or 'random'")  # fmt: skip
    num_proc = values["dataset_num_proc"]
    require("dataset_num_proc", num_proc is None or (_integer(num_proc) and num_proc >= 1), "an integer >= 1")
    center = values["center_rewards_coefficient"]
    require("center_rewards_coefficient", center is None or (_finite(center) and center >= 0), "a number >= 0")
    penalty = values["length_bias_penalty"]
    require("length_bias_penalty", _finite(penalty) and penalty >= 0, "a number >= 0 (0 = off)")
    decay = values["layer_lr_decay"]
    require("layer_lr_decay", _finite(decay) and 0 < decay <= 1, "a number in (0, 1] (1 = off)")
    missing = _missing_integrations(values["report_to"])
    require("report_to", not missing, f"'none' or installed integrations ({', '.join(missing)} not installed)")


def _check_unused_model_keys(values: Mapping[str, Any], sources: KeySources) -> None:
    """Of trl.ModelConfig only model_name_or_path is used; a PEFT, quantisation or dtype key would be silently
    ignored."""
    for f in fields(ModelConfig):
        if f.name != "model_name_or_path" and f.init and values.get(f.name, f.default) != f.default:
            raise UserError(
                f"{sources.where(f.name)} is not used by this pipeline (of trl.ModelConfig only model_name_or_path "
                f"is); remove it (got {values[f.name]!r})"
            )


def _check_push_targets(checks: _Checks) -> None:
    """The pushes come after training: a repo id they would refuse must stop the run now."""
    values, sources = checks.values, checks.sources
    for key, flag, example in (
        ("hub_model_id", "push_to_hub", "your-name/reward-model"),
        ("dataset_hub_id", "dataset_push_to_hub", "your-name/preference-pairs"),
    ):
        if values[flag]:
            if not values[key]:
                raise UserError(f"{sources.where(key)} is not set but {flag} is true; set it, e.g. {example}")
            checks.require(key, _is_repo_id(values[key]), f"a Hugging Face Hub repo id, e.g. {example}")


def _missing_integrations(report_to: str | list[str] | None) -> list[str]:
    """The report_to integrations that are not installed (the trainer would fail on them after the data step)."""
    from transformers.integrations import get_available_reporting_integrations

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    available = set(get_available_reporting_integrations())
    return [name for name in names if name not in ("none", "all") and name not in available]


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True
