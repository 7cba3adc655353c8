"""The flags of every command that loads a saved reward model to score with it: one dataclass field (and one help
text) per flag, shared by `python -m pipeline.score`, `pipeline.serve` and `pipeline.evaluation`."""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from pipeline.model.batching import CPU_MAX_BATCH, CPU_MAX_TOKENS, GPU_MAX_BATCH, GPU_MAX_TOKENS
from pipeline.model.scorer import PRECISIONS


def _flag(default: Any, help: str, unset: str = "", **argparse_kwargs: Any) -> Any:
    """A flag: its default, its help, and what an unset (None) default means, as `--help` states it."""
    return field(default=default, metadata={"help": help, "unset": unset, **argparse_kwargs})


@dataclass
class ScorerArguments:
    """How a command loads and runs a reward model (TRL-style script arguments, fields with `metadata["help"]`).

    Args:
        model (`str`):
            The reward model's directory or Hub id.
        precision (`str`, *optional*, defaults to `"fp32"`):
            `"fp32"` (exact), `"bf16"`, `"fp16"` or `"auto"` (see `RewardScorer`).
        max_length (`int`, *optional*):
            Tokens per (prompt, response) at most; unset: the tokenizer's `model_max_length` (within the model's
            positions).
        max_tokens (`int`, *optional*):
            Padded tokens per forward pass at most; unset: by device.
        batch_size (`int`, *optional*):
            Sequences per forward pass at most; unset: by device.

    Example:

    ```python
    >>> from pipeline.core.errors import FlagParser
    >>> from pipeline.model.arguments import ScorerArguments
    >>> parser = FlagParser("python -m pipeline.evaluation")
    >>> ScorerArguments.add_to(parser, ("model", "batch_size"), batch_size=32)
    >>> parser.parse_args(["--model", "reward_model"]).batch_size
    32
    ```
    """

    model: str = field(metadata={"help": "reward model directory (or Hub id)"})
    precision: str = _flag(
        "fp32", "fp32: exact scores; bf16, fp16: faster where the device runs them natively; auto: picks by device",
        choices=PRECISIONS,
    )  # fmt: skip
    max_length: int | None = _flag(
        None, "tokens per (prompt, response) at most; longer pairs are truncated",
        unset="the tokenizer's model_max_length, at most the model's positions",
    )  # fmt: skip
    max_tokens: int | None = _flag(
        None, "padded tokens per forward pass at most", unset=f"{CPU_MAX_TOKENS} on CPU, {GPU_MAX_TOKENS} on GPU"
    )
    batch_size: int | None = _flag(
        None, "sequences per forward pass at most", unset=f"{CPU_MAX_BATCH} on CPU, {GPU_MAX_BATCH} on GPU"
    )

    @classmethod
    def add_to(cls, parser: argparse.ArgumentParser, names: typing.Iterable[str], **defaults: Any) -> None:
        """Add the flags `names` (in this order) to `parser`, each with its help text.

        Where given, a command's own default replaces the field's; a field without a default is a required flag.

        Args:
            parser (`argparse.ArgumentParser`):
                The command's parser.
            names (`Iterable[str]`):
                The fields to add as `--name` flags, in this order.
            **defaults:
                A command's own default for some of them (its `--help` states it).

        Example:

        ```python
        >>> import argparse
        >>> from pipeline.model.arguments import ScorerArguments
        >>> parser = argparse.ArgumentParser()
        >>> ScorerArguments.add_to(parser, ("model", "precision"))
        >>> parser.parse_args(["--model", "reward_model"]).precision
        'fp32'
        ```
        """
        known = {f.name: f for f in fields(cls)}
        hints = typing.get_type_hints(cls)
        for name in names:
            spec = known[name]
            kind = next(t for t in typing.get_args(hints[name]) or (hints[name],) if t is not type(None))
            options = {key: value for key, value in spec.metadata.items() if key not in ("help", "unset")}
            default = defaults.get(name, spec.default)
            help_text = spec.metadata["help"]
            if default is MISSING:
                options["required"] = True
            else:
                options["default"] = default
                help_text += f" (default: {spec.metadata['unset'] if default is None else default})"
            parser.add_argument(f"--{name}", type=kind, help=help_text, **options)
