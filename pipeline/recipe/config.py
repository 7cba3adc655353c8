"""Recipe dataclasses and the TrlParser that fills them (recipe YAML, then CLI overrides)."""

from __future__ import annotations

import argparse
import difflib
import math
import os
import re
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import torch
from trl import ModelConfig, RewardConfig, TrlParser

from pipeline.core.errors import UserError, one_line


def key(default: Any, help: str) -> Any:
    """A recipe key: its default and the help text `--help` shows."""
    return field(default=default, metadata={"help": help})


@dataclass
class ScriptArguments:
    """Pipeline-specific recipe keys (data and evaluation)."""

    dataset_path: str = key("data/answers.csv", "Ranked input file with columns prompt, answer, rank (rank 1 = best).")
    test_size: float = key(0.2, "Fraction of prompts held out for evaluation (the split is by prompt).")
    split_seed: int = key(42, "Seed of the prompt-level train/test split.")
    drop_empty_answers: bool = key(True, "Drop (and count) rows whose answer is empty; when false they are an error.")
    objective: str = key(
        "pairwise",
        "'pairwise' (TRL's loss on every (chosen, rejected) pair) or 'ranking' (batches of whole prompts, "
        "each answer encoded once, loss averaged over the prompt's ordered pairs; the same loss when K = 2).",
    )
    use_margin: bool = key(
        False, "Subtract the rank gap (margin) inside the pairwise loss, as in Llama 2's reward model."
    )
    truncation_side: str = key(
        "left",
        "Side tokens are cut from when prompt+answer exceed max_length ('left' keeps the end of the "
        "prompt, next to the answer). Saved with the tokenizer so the Quick Start call encodes identically.",
    )
    eval_batch_size: int = key(32, "Batch size of the exact held-out evaluation.")
    test_path: str | None = key(
        None,
        "Optional separate test set (file, save_to_disk directory or Hub id). It replaces the prompt-level "
        "split: all of dataset_path trains (minus prompts also in the test set), all of test_path is held out.",
    )
    input_shape: str = key(
        "auto",
        "'ranked' (prompt, answer, rank or score), 'pairwise' (prompt, chosen, rejected[, margin]) or "
        "'auto' (pairwise when the input has chosen/rejected columns and no answer column).",
    )
    prompt_column: str = key("prompt", "Input column holding the prompt.")
    answer_column: str = key("answer", "Ranked input: column holding the answer.")
    rank_column: str = key("rank", "Ranked input: column holding the rank (1 = best); '' to ignore it.")
    score_column: str = key(
        "score", "Ranked input: column of a score (higher = better), used instead of rank; '' to ignore."
    )
    chosen_column: str = key("chosen", "Pairwise input: column of the preferred answer.")
    rejected_column: str = key("rejected", "Pairwise input: column of the other answer.")
    margin_column: str = key("margin", "Pairwise input: optional margin column (absent = 1.0 for every pair).")
    dataset_push_to_hub: bool = key(False, "Push the processed DatasetDict to the Hub as dataset_hub_id.")
    dataset_hub_id: str | None = key(None, "Hub dataset repo for dataset_push_to_hub, e.g. your-name/preference-pairs.")
    min_accuracy: float = key(
        0.0, "Quality gate: lowest held-out accuracy allowed to push or replace an existing model."
    )
    force_push: bool = key(False, "Push / replace an existing model even when the quality gate fails.")
    reward_stats_max_answers: int = key(
        20000, "Training answers scored (a seeded sample if more) for the stored reward mean/std."
    )


@dataclass
class PipelineRewardConfig(RewardConfig):
    """RewardConfig with defaults that run unchanged on CPU and GPU.

    TRL defaults bf16=True (an error on CPU-only machines) and activation checkpointing on (slower, and pointless
    for a model this small); we pick bf16 only where the device supports it and keep checkpointing off.
    """

    output_dir: str | None = key("reward_model", "Where the trained model, tokenizer and model card are saved.")
    bf16: bool | None = key(None, "bf16 mixed precision. Unset = on when a bf16-capable GPU is present, off otherwise.")
    activation_checkpointing: bool | None = key(None, "Recompute activations in backward (saves memory, slower).")
    gradient_checkpointing: bool | None = key(None, "Deprecated alias of activation_checkpointing.")
    max_length: int | None = key(512, "Maximum tokens of [CLS] prompt [SEP] answer [SEP]; longer pairs are cut.")
    learning_rate: float = key(5e-5, "The initial learning rate for AdamW.")
    save_strategy: str = key(
        "steps",
        "Checkpoint schedule ('steps', 'epoch', 'no'). Checkpoints go to .<output_dir>.checkpoints/; "
        "rerunning the same command after a crash resumes from the last complete one.",
    )
    save_steps: float = key(200, "Save a checkpoint every N optimizer steps.")
    save_total_limit: int | None = key(2, "Checkpoints kept (the newest ones); the folder is removed after success.")
    train_sampling_strategy: str = key(
        "group_by_length",
        "'group_by_length' (default): batches of similar-length examples, less padding (faster; "
        "bench/RESULTS.md, 'Training speed'); 'random': TRL's default.",
    )
    length_chunked_forward: bool = key(
        True, "On CPU with one process, run each batch as near-equal-length pieces (less padding, same loss)."
    )
    ddp_find_unused_parameters: bool | None = key(
        False, "DDP: look for parameters without gradients each step (none in these models; slower)."
    )
    overwrite_output_dir: bool = key(
        False, "Replace a model already saved in output_dir (otherwise the run stops before training)."
    )
    logging_steps: float = key(10, "Log every N optimizer steps.")

    def __post_init__(self) -> None:
        if self.bf16 is None:
            self.bf16 = (
                not self.fp16 and not self.use_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
            )
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; on CPU it only warns
        if not torch.accelerator.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # Several processes and no accelerator: without use_cpu, transformers/accelerate ignore WORLD_SIZE and
            # every process trains alone on all the data (and writes the outputs). use_cpu selects DDP over gloo.
            self.use_cpu = True
        if self.activation_checkpointing is None:  # off unless asked for under either name
            self.activation_checkpointing = bool(self.gradient_checkpointing)
        super().__post_init__()


RECIPE_DATACLASSES = (ScriptArguments, PipelineRewardConfig, ModelConfig)

TRAIN_USAGE = "accelerate launch pipeline/train.py --config RECIPE.yaml [--KEY VALUE ...]"
# Besides the pipeline's own keys, the training keys `--help` shows; --help-all lists every one.
TRAINING_KEYS_IN_HELP = (
    "model_name_or_path", "output_dir", "overwrite_output_dir", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "warmup_steps", "weight_decay",
    "max_length", "seed", "bf16", "save_steps", "resume_from_checkpoint", "push_to_hub", "hub_model_id", "hub_token",
)  # fmt: skip


@dataclass(frozen=True)
class HelpPage:
    """What `--help` shows for one command: its usage, a description, and the keys worth knowing first (by group)."""

    usage: str
    description: str
    groups: tuple[tuple[str, tuple[str, ...]], ...]


TRAIN_HELP = HelpPage(
    usage=TRAIN_USAGE,
    description="Ranked file -> preference pairs -> reward model -> exact held-out accuracy -> saved model.",
    groups=(
        ("pipeline keys", tuple(f.name for f in fields(ScriptArguments))),
        ("model and training keys (the most used)", TRAINING_KEYS_IN_HELP),
    ),
)


class Recipe(NamedTuple):
    """A parsed, validated recipe; unpacks as (script, training, model)."""

    script: ScriptArguments
    training: PipelineRewardConfig
    model: ModelConfig


class _ParseError(Exception):
    """argparse's own error message, raised instead of its usage dump and exit."""


class _BadValue(Exception):
    """A value that does not convert to its key's type or is not one of its choices."""

    def __init__(self, action: argparse.Action, value: Any) -> None:
        super().__init__(action.dest)
        self.action, self.value = action, value


class RecipeParser(TrlParser):
    """The parser of every recipe key: errors are exceptions (no usage dump, no exit), flags are never abbreviated."""

    def __init__(self) -> None:
        super().__init__(RECIPE_DATACLASSES, allow_abbrev=False, add_help=False, usage=TRAIN_USAGE)

    def error(self, message: str) -> NoReturn:
        raise _ParseError(message)

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        try:
            return super()._get_value(action, arg_string)
        except argparse.ArgumentError as err:
            raise _BadValue(action, arg_string) from err

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            raise _BadValue(action, value)

    def key_action(self, key: str) -> argparse.Action | None:
        """The action of a recipe key (the first one: `--no_KEY` shares its dest)."""
        return next((action for action in self._actions if action.dest == key), None)

    def keys(self) -> list[str]:
        return list(dict.fromkeys(action.dest for action in self._actions))


def make_parser() -> RecipeParser:
    return RecipeParser()


def _kind(action: argparse.Action) -> type | None:
    """The Python type a key's converter makes: int, float, bool, dict, str, or None (named choices, lists...).

    By name: TRL wraps converters (`none` accepted for optional keys) and keeps the inner converter's name.
    """
    kinds = {"int": int, "float": float, "string_to_bool": bool, "dict": dict, "str": str}
    return kinds.get(getattr(action.type, "__name__", ""))


def _expected(action: argparse.Action) -> str:
    if action.choices is not None:
        return "one of " + ", ".join(str(choice) for choice in action.choices)
    names = {int: "an integer", float: "a number", bool: "true or false", dict: "a mapping"}
    return names.get(_kind(action), "text")


def _did_you_mean(word: str, known: list[str], shown: str) -> str:
    """` (did you mean X?)` with the closest known key written as `shown` (e.g. "'{}'" or "--{}"), or ""."""
    match = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean {shown.format(match[0])}?)" if match else ""


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


def _take_config(argv: list[str]) -> str | None:
    """Remove `--config PATH` (or `--config=PATH`) from argv; the path, or None."""
    found = [i for i, arg in enumerate(argv) if arg == "--config" or arg.startswith("--config=")]
    if not found:
        return None
    if len(found) > 1:
        raise UserError("command line: --config is given more than once; give one recipe")
    index = found[0]
    if argv[index].startswith("--config="):
        return argv.pop(index).split("=", 1)[1]
    if index + 1 >= len(argv):
        raise UserError("command line: --config needs a recipe path, e.g. --config recipes/quickstart.yaml")
    del argv[index]
    return argv.pop(index)


def _read_recipe(path: str) -> dict[str, Any]:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"recipe {path} is not UTF-8 text") from err
    except OSError as err:
        raise UserError(f"cannot read recipe {path}: {err.strerror or one_line(err)}") from err
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"recipe {path} is not valid YAML: {one_line(err)}") from err
    if not isinstance(values, dict):
        raise UserError(f"recipe {path} must be a YAML mapping of keys (lines of `key: value`)")
    return {str(key): value for key, value in values.items()}


def _optional_keys() -> set[str]:
    """Keys whose type admits None (a blank `key:` in YAML); any other key needs a value."""
    optional = set()
    for dataclass_type in RECIPE_DATACLASSES:
        for name, hint in typing.get_type_hints(dataclass_type).items():
            if type(None) in typing.get_args(hint):
                optional.add(name)
    return optional


def _recipe_value(parser: RecipeParser, action: argparse.Action, value: Any) -> Any:
    """A YAML value converted as the same value on the command line would be; _BadValue when it cannot be."""
    if isinstance(value, str):
        converted = parser._get_value(action, value)
        parser._check_value(action, converted)
        return converted
    if isinstance(value, list) and action.nargs in ("+", "*"):
        return [_recipe_value(parser, action, item) for item in value]
    kind = _kind(action)
    if kind in (int, float):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise _BadValue(action, value)
        return kind(value)
    if kind is bool and not isinstance(value, bool):
        raise _BadValue(action, value)
    if action.choices is not None:  # a YAML number or bool for a key of named choices
        return _recipe_value(parser, action, str(value))
    return value  # mappings (lr_scheduler_kwargs), lists (report_to) and the like go to the dataclass as they are


def _apply_recipe(parser: RecipeParser, path: str) -> None:
    """Make the recipe's values the parser's defaults (the command line then overrides them), checking each one."""
    values = _read_recipe(path)
    env = values.pop("env", {})  # TRL's recipe convention: environment variables to set
    if not isinstance(env, dict):
        raise UserError(f"recipe {path}: env must be a mapping of environment variables (NAME: value)")
    known, optional = parser.keys(), _optional_keys()
    for key, value in values.items():
        action = parser.key_action(key)
        if action is None:
            raise UserError(f"recipe {path}: unknown key '{key}'" + _did_you_mean(key, known, "'{}'"))
        if value is None and key not in optional:
            raise UserError(f"recipe {path}: {key} is blank; give it a value (default: {action.default})")
        try:
            converted = None if value is None else _recipe_value(parser, action, value)
        except _BadValue as err:
            raise UserError(f"recipe {path}: {key} expects {_expected(action)} (got {value!r})") from err
        for same in (a for a in parser._actions if a.dest == key):  # also --no_KEY
            same.default, same.required = converted, False
    for name, value in env.items():
        os.environ[str(name)] = str(value)


def _keys_on_command_line(parser: RecipeParser, argv: list[str]) -> set[str]:
    options = {option: action.dest for action in parser._actions for option in action.option_strings}
    return {options[arg.split("=", 1)[0]] for arg in argv if arg.split("=", 1)[0] in options}


def _unknown_argument(remaining: list[str], known: list[str]) -> UserError:
    flag = next((arg for arg in remaining if arg.startswith("-")), None)
    if flag is None:
        extra = remaining[0]
        hint = f" (did you mean --config {extra}?)" if extra.endswith((".yaml", ".yml")) else ""
        return UserError(f"command line: unexpected argument '{extra}'{hint}; flags are --KEY VALUE")
    name = flag.split("=", 1)[0]
    return UserError(
        f"command line: unknown flag {name}" + _did_you_mean(name.lstrip("-").replace("-", "_"), known, "--{}")
    )


def _parse_error(message: str) -> UserError:
    needs = re.fullmatch(r"argument (\S+?)(?:/\S+)?: expected (?:one|at least one) argument", message)
    if needs:
        return UserError(f"command line: {needs.group(1)} needs a value")
    return UserError(f"command line: {message}")


class _ShortHelpFormatter(argparse.HelpFormatter):
    """Each key's help followed by its default, unless the default is None (unset)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, argparse.SUPPRESS) and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _metavar(action: argparse.Action) -> str:
    if action.choices is not None:
        choices = [str(choice) for choice in action.choices]
        return "{" + ",".join(choices) + "}" if len(choices) <= 4 else "NAME"
    return {int: "INT", float: "NUMBER", bool: "BOOL", dict: "JSON"}.get(_kind(action), "TEXT")


def print_help(parser: RecipeParser, page: HelpPage) -> None:
    """The short help: usage, --config, the page's keys with their help and defaults, and how to see every key."""
    display = argparse.ArgumentParser(
        usage=page.usage,
        description=page.description,
        epilog=(
            "Every key can be set in the recipe (key: value) or on the command line (--key value), which wins. "
            f"All {len(parser.keys())} keys (transformers TrainingArguments, TRL RewardConfig and ModelConfig "
            "included): --help-all."
        ),
        add_help=False,
        formatter_class=lambda prog: _ShortHelpFormatter(prog, max_help_position=34),
    )
    recipe = display.add_argument_group("recipe")
    recipe.add_argument(
        "--config",
        metavar="RECIPE.yaml",
        default=argparse.SUPPRESS,
        help="YAML file of keys, e.g. recipes/quickstart.yaml; --KEY VALUE flags override it",
    )
    for title, keys in page.groups:
        group = display.add_argument_group(title)
        for key in keys:
            action = parser.key_action(key)
            if action is not None:  # the first sentence: --help-all has the rest
                help_text = re.split(r"(?<=[.!?])\s+(?=[A-Z'(])", action.help or "")[0].replace("%", "%%")
                group.add_argument(f"--{key}", metavar=_metavar(action), default=action.default, help=help_text)
    shown = display.add_argument_group("help")
    shown.add_argument("-h", "--help", action="store_true", default=argparse.SUPPRESS, help="this help")
    shown.add_argument("--help-all", action="store_true", default=argparse.SUPPRESS, help="every key, with its help")
    print(display.format_help())


def parse_recipe(argv: Sequence[str] | None = None, page: HelpPage = TRAIN_HELP, trains: bool = True) -> Recipe:
    """Parse `--config RECIPE` plus command-line overrides, and validate; every mistake is a one-line UserError that
    names the recipe file or the command line. `--help` prints `page`, `--help-all` every key (both exit 0).
    `trains`: the command trains, so the trainer's own settings are checked too (the data step skips them)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    if "--help-all" in argv:
        parser.usage = page.usage
        parser.print_help()
        raise SystemExit(0)
    if "-h" in argv or "--help" in argv:
        print_help(parser, page)
        raise SystemExit(0)
    recipe = _take_config(argv)
    if recipe is not None:
        _apply_recipe(parser, recipe)
    sources = KeySources(recipe, _keys_on_command_line(parser, argv))
    try:
        namespace, remaining = parser.parse_known_args(args=argv)
    except _BadValue as err:
        key = err.action.dest
        raise UserError(f"{sources.where(key)} expects {_expected(err.action)} (got {err.value!r})") from err
    except _ParseError as err:
        raise _parse_error(str(err)) from err
    if remaining:
        raise _unknown_argument(remaining, parser.keys())
    values = vars(namespace)
    validate(values, sources)  # the values as typed, before the dataclasses derive anything from them
    try:
        parsed = [
            dataclass_type(**{f.name: values[f.name] for f in fields(dataclass_type) if f.init and f.name in values})
            for dataclass_type in RECIPE_DATACLASSES
        ]
    except (ValueError, TypeError, ImportError) as err:  # a dataclass's own check (__post_init__): key combinations
        raise UserError(f"{sources.source}: {one_line(err)}") from err
    if trains:
        check_trainer_keys(parsed[1], sources)
    return Recipe(*parsed)


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


def validate(values: Mapping[str, Any], sources: KeySources) -> None:
    """Every key a user can type, checked before any work: one line naming the key, its value and what is allowed."""

    def require(key: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise UserError(f"{sources.where(key)} must be {allowed} (got {values.get(key)!r})")

    def number(key: str, low: float, low_allowed: bool = True) -> None:
        value = values[key]
        ok = _finite(value) and (value >= low if low_allowed else value > low)
        require(key, ok, f"a number {'>=' if low_allowed else '>'} {low:g}")

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
    require("truncation_side", values["truncation_side"] in ("left", "right"), "'left' or 'right'")
    # DistilBERT has 512 position embeddings; longer inputs crash inside the model.
    max_length = values["max_length"]
    require("max_length", _integer(max_length) and 8 <= max_length <= 512, "between 8 and 512")
    min_accuracy = values["min_accuracy"]
    require("min_accuracy", _finite(min_accuracy) and 0.0 <= min_accuracy <= 1.0, "between 0 and 1")
    for key in ("per_device_train_batch_size", "gradient_accumulation_steps", "eval_batch_size",
                "reward_stats_max_answers", "per_device_eval_batch_size"):  # fmt: skip
        require(key, _integer(values[key]) and values[key] >= 1, "an integer >= 1")
    for key in ("split_seed", "seed"):  # numpy's generators take 0 .. 2**32 - 1
        require(key, _integer(values[key]) and 0 <= values[key] < 2**32, "an integer from 0 to 4294967295")
    number("learning_rate", 0, low_allowed=False)
    max_steps = values["max_steps"]
    require("max_steps", _integer(max_steps) and (max_steps == -1 or max_steps >= 1),
            "a number of steps >= 1, or -1 to train num_train_epochs")  # fmt: skip
    if max_steps == -1:  # 0 epochs would save the untrained model as the result
        epochs = values["num_train_epochs"]
        require("num_train_epochs", _finite(epochs) and epochs > 0, "a number > 0 (or set max_steps)")
    for key in ("warmup_steps", "weight_decay", "max_grad_norm"):
        number(key, 0)
    number("adam_epsilon", 0, low_allowed=False)
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
    missing = _missing_integrations(values["report_to"])
    require("report_to", not missing, f"'none' or installed integrations ({', '.join(missing)} not installed)")
    # Of trl.ModelConfig only model_name_or_path is used; a PEFT, quantisation or dtype key would be silently ignored.
    for f in fields(ModelConfig):
        if f.name != "model_name_or_path" and f.init and values.get(f.name, f.default) != f.default:
            raise UserError(
                f"{sources.where(f.name)} is not used by this pipeline (of trl.ModelConfig only model_name_or_path "
                f"is); remove it (got {values[f.name]!r})"
            )
    # The pushes come after training: a repo id they would refuse must stop the run now.
    for key, flag, example in (
        ("hub_model_id", "push_to_hub", "your-name/reward-model"),
        ("dataset_hub_id", "dataset_push_to_hub", "your-name/preference-pairs"),
    ):
        if values[flag]:
            if not values[key]:
                raise UserError(f"{sources.where(key)} is not set but {flag} is true; set it, e.g. {example}")
            require(key, _is_repo_id(values[key]), f"a Hugging Face Hub repo id, e.g. {example}")


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
