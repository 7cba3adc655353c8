"""Loading a saved reward model and its tokenizer, with one-line errors. Light on purpose: `RewardScorer` needs only
torch and transformers (no datasets, evaluate or trl), so scoring from Python runs wherever a model can."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from pipeline.core.errors import UserError, one_line
from pipeline.model.base import locate_model

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "vocab.json")


def load_reward_model(model_dir: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    # A mistyped folder must not turn into a minute of Hub retries: located first, offline without the network.
    model_dir = locate_model(model_dir, "model")
    # transformers 5 quietly returns a 5-token default tokenizer for a directory without tokenizer files.
    if Path(model_dir).is_dir() and not any((Path(model_dir) / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{model_dir}: cannot load a tokenizer (no tokenizer files); save it with the model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError) as err:
        raise UserError(f"{model_dir}: cannot load a tokenizer ({one_line(err, 200)})") from err
    try:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{model_dir}: cannot load a reward model ({one_line(err, 200)})") from err
    if model.config.num_labels != 1:
        raise UserError(f"{model_dir}: the model has num_labels={model.config.num_labels}; a reward model has 1")
    return model, tokenizer


def position_limit(config: Any) -> int | None:
    """How many tokens the model can read (its position embeddings), or None when its config (a config object or
    config.json's dict) does not say."""
    get = config.get if isinstance(config, dict) else lambda key: getattr(config, key, None)
    limit = get("max_position_embeddings") or get("n_positions")
    return int(limit) if isinstance(limit, int) and limit > 0 else None


def check_max_length(max_length: int | None, limit: int | None, model: str) -> None:
    """A --max_length the model cannot read is a one-line error (every command that takes the flag)."""
    if max_length is not None and limit is not None and max_length > limit:
        raise UserError(
            f"--max_length {max_length} is above what the model {model} can read ({limit} tokens); use at most {limit}"
        )


def default_max_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    limit = getattr(model.config, "max_position_embeddings", None) or 512
    return int(min(tokenizer.model_max_length, limit))
