"""The model directory: checked before any work, gated on quality, written whole (model, tokenizer, evaluation,
data report, model card) in one atomic step, then pushed."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from pipeline.core.errors import UserError
from pipeline.core.files import atomic_dir, check_replaceable
from pipeline.evaluation.heldout import HeldOutEvaluation
from pipeline.evaluation.report import write_report
from pipeline.publishing.model_card import write_model_card

# Everything save_model_dir may write (save_pretrained's model and tokenizer files included); a directory holding
# only these, config.json and eval_results.json among them, was written by this program (and may be replaced with
# overwrite_output_dir). Anything else in it is the user's and is never deleted.
OWN_MODEL_FILES = (
    "config.json", "eval_results.json", "data_report.json", "README.md", "evaluation", ".gitignore",
    "model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
    "pytorch_model.bin.index.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "*.model",
    "chat_template.jinja", "chat_template.json", "additional_chat_templates",
)  # fmt: skip
MODEL_MARKS = ("config.json", "eval_results.json")


def candidate_dir(output_dir: Path) -> Path:
    """Where a model that fails the quality gate is saved instead of replacing output_dir."""
    return output_dir.with_name(f"{output_dir.name}-candidate")


def check_output_dir(output_dir: Path, overwrite: bool, inputs: tuple[str | None, ...] = ()) -> None:
    """Fail before training, not after, when the model could not be saved or would replace something unasked."""
    parent = output_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UserError(f"output_dir {output_dir}: cannot write there ({err.strerror})") from err
    if check_replaceable(output_dir, OWN_MODEL_FILES, "output_dir", inputs, MODEL_MARKS) and not overwrite:
        raise UserError(
            f"output_dir {output_dir} already holds a trained model; to replace it set overwrite_output_dir: true "
            "in the recipe (or pass --overwrite_output_dir true), or choose another output_dir"
        )
    # Where a model that fails the quality gate goes instead: also replaced as a whole.
    check_replaceable(candidate_dir(output_dir), OWN_MODEL_FILES, "output_dir's candidate folder", inputs, MODEL_MARKS)


def quality_gate(report: dict[str, Any], min_accuracy: float) -> str | None:
    """Why this model should not be pushed or replace another one, or None when it passes."""
    accuracy = report["model"]["pairwise_accuracy"]
    best = report["best_trivial_baseline"]
    if accuracy < min_accuracy:
        return f"held-out accuracy {accuracy:.4f} is below min_accuracy {min_accuracy:.4f}"
    if accuracy <= best["pairwise_accuracy"]:
        return (
            f"held-out accuracy {accuracy:.4f} is not above the best trivial baseline "
            f"({best['name']}: {best['pairwise_accuracy']:.4f})"
        )
    return None


@dataclass(frozen=True)
class Destination:
    target: Path  # output_dir, or its candidate folder when the gate failed
    gate_failure: str | None  # the one-line error to end the run with after saving, or None


def choose_destination(
    output_dir: Path, report: dict[str, Any], min_accuracy: float, force_push: bool, push_to: str | None
) -> Destination:
    """Apply the quality gate: a model that fails it neither replaces an existing model nor is pushed."""
    failure = quality_gate(report, min_accuracy)
    replacing = (output_dir / "config.json").exists()
    if not failure:
        return Destination(output_dir, None)
    if not (push_to or replacing):
        print(f"warning: {failure}")
        return Destination(output_dir, None)
    if force_push:
        print(f"warning: {failure}; continuing because force_push is set")
        return Destination(output_dir, None)
    target = candidate_dir(output_dir)
    action = f"not pushing to {push_to}" if push_to else f"not replacing {output_dir}"
    return Destination(
        target,
        f"quality gate: {failure}; {action}. The new model is saved in {target}. "
        "To push or replace anyway, set force_push: true in the recipe (or pass --force_push true)",
    )


@dataclass(frozen=True)
class CardInfo:
    """What the model card says besides the metrics."""

    base_model: str
    recipe: dict[str, Any]
    max_length: int
    truncation_side: str
    hub_model_id: str | None


def save_model_dir(
    target: Path,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    evaluation: HeldOutEvaluation,
    results: dict[str, Any],
    data_report: dict[str, Any],
    card: CardInfo,
    checkpoint_dir: Path,
) -> None:
    """Write everything to a hidden sibling and swap it into place: `target` is the old model or the new one."""
    try:
        with atomic_dir(target, keep=(".gitignore",)) as staging:  # reward_model/'s tracked file stays
            model.save_pretrained(str(staging))
            tokenizer.save_pretrained(str(staging))
            (staging / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
            (staging / "data_report.json").write_text(json.dumps(data_report, indent=2) + "\n")
            write_report(staging / "evaluation", evaluation.pairs, evaluation.result, evaluation.report)
            write_model_card(
                staging,
                base_model=card.base_model,
                metrics=results,
                evaluation=evaluation.report,
                data_report=data_report,
                recipe=card.recipe,
                max_length=card.max_length,
                truncation_side=card.truncation_side,
                hub_model_id=card.hub_model_id,
            )
    except OSError as err:  # disk full, quota, permissions changed mid-run: the previous model is untouched
        raise UserError(
            f"cannot save the model to {target}: {err.strerror or err}; nothing was replaced, and the run's "
            f"checkpoints are kept in {checkpoint_dir} (free space and rerun the same command to resume)"
        ) from err
