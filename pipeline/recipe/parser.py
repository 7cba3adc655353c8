"""Parsing a recipe: YAML, then command-line overrides, each value converted as the command line would, every error
one line naming where the value came from (the recipe file or the command line), and a short `--help`."""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NoReturn

from trl import TrlParser
from typing_extensions import override

from pipeline.core.errors import UserError, one_line
from pipeline.recipe.config import RECIPE_DATACLASSES, Recipe, ScriptArguments
from pipeline.recipe.validation import KeySources, check_trainer_keys, validate

TRAIN_USAGE = "accelerate launch pipeline/train.py --config RECIPE.yaml [--KEY VALUE ...]"
# Besides the pipeline's own keys, the training keys `--help` shows; --help-all lists every one.
TRAINING_KEYS_IN_HELP = (
    "model_name_or_path", "output_dir", "overwrite_output_dir", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "warmup_steps", "weight_decay",
    "max_length", "seed", "bf16", "save_steps", "resume_from_checkpoint", "push_to_hub", "hub_model_id", "hub_token",
)  # fmt: skip


# Pipeline keys that only size the evaluation phase: in --help-all, not on the short page.
EVALUATION_KEYS = ("eval_batch_size", "reward_stats_max_answers", "baseline_max_pairs")

# Keys whose value may be `auto`, i.e. unset: the dataclass decides by hardware.
AUTO_KEYS = ("bf16",)


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
        ("pipeline keys", tuple(f.name for f in fields(ScriptArguments) if f.name not in EVALUATION_KEYS)),
        ("model and training keys (the most used)", TRAINING_KEYS_IN_HELP),
    ),
)


class _ParseError(Exception):
    """argparse's own error message, raised instead of its usage dump and exit."""


class _BadValue(Exception):
    """A value that does not convert to its key's type or is not one of its choices."""

    @override
    def __init__(self, action: argparse.Action, value: Any) -> None:
        super().__init__(action.dest)
        self.action, self.value = action, value


class RecipeParser(TrlParser):
    """The parser of every recipe key: errors are exceptions (no usage dump, no exit), flags are never abbreviated."""

    @override
    def __init__(self) -> None:
        super().__init__(RECIPE_DATACLASSES, allow_abbrev=False, add_help=False, usage=TRAIN_USAGE)

    @override
    def error(self, message: str) -> NoReturn:
        raise _ParseError(message)

    @override
    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        if action.dest in AUTO_KEYS and arg_string.strip().lower() == "auto":
            return None  # unset: the dataclass picks by hardware
        try:
            return super()._get_value(action, arg_string)
        except argparse.ArgumentError as err:
            raise _BadValue(action, arg_string) from err

    @override
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
    if action.dest in AUTO_KEYS:
        return "true, false or auto"
    if action.choices is not None:
        return "one of " + ", ".join(str(choice) for choice in action.choices)
    names = {int: "an integer", float: "a number", bool: "true or false", dict: "a mapping"}
    return names.get(_kind(action), "text")


def _did_you_mean(word: str, known: list[str], shown: str) -> str:
    """` (did you mean X?)` with the closest known key written as `shown` (e.g. "'{}'" or "--{}"), or ""."""
    match = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean {shown.format(match[0])}?)" if match else ""


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

    @override
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
