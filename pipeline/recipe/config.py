"""Recipe dataclasses and the TrlParser that fills them (recipe YAML, then CLI overrides)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from trl import ModelConfig, RewardConfig, TrlParser

from pipeline.core.errors import UserError, one_line


@dataclass
class ScriptArguments:
    """Pipeline-specific recipe keys (data and evaluation)."""

    dataset_path: str = field(
        default="data/answers.csv",
        metadata={"help": "Ranked input file with columns prompt, answer, rank (rank 1 = best)."},
    )
    test_size: float = field(
        default=0.2,
        metadata={"help": "Fraction of prompts held out for evaluation (the split is by prompt)."},
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the prompt-level train/test split."})
    drop_empty_answers: bool = field(
        default=True,
        metadata={"help": "Drop (and count) rows whose answer is empty; when false they are an error."},
    )
    objective: str = field(
        default="pairwise",
        metadata={
            "help": "'pairwise': TRL's loss on every (chosen, rejected) pair. 'ranking': batches of whole prompts, "
            "each answer encoded once, loss averaged over the prompt's ordered pairs (same loss when K = 2)."
        },
    )
    use_margin: bool = field(
        default=False,
        metadata={"help": "Subtract the rank gap (margin) inside the pairwise loss, as in Llama 2's reward model."},
    )
    truncation_side: str = field(
        default="left",
        metadata={
            "help": "Side tokens are cut from when prompt+answer exceed max_length ('left' keeps the end of the "
            "prompt, next to the answer). Saved with the tokenizer so the Quick Start call encodes identically."
        },
    )
    eval_batch_size: int = field(default=32, metadata={"help": "Batch size of the exact held-out evaluation."})
    test_path: str | None = field(
        default=None,
        metadata={
            "help": "Optional separate test set (file, save_to_disk directory or Hub id). It replaces the prompt-level "
            "split: all of dataset_path trains (minus prompts also in the test set), all of test_path is held out."
        },
    )
    input_shape: str = field(
        default="auto",
        metadata={
            "help": "'ranked' (prompt, answer, rank or score), 'pairwise' (prompt, chosen, rejected[, margin]) or "
            "'auto' (pairwise when the input has chosen/rejected columns and no answer column)."
        },
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Input column holding the prompt."})
    answer_column: str = field(default="answer", metadata={"help": "Ranked input: column holding the answer."})
    rank_column: str = field(
        default="rank", metadata={"help": "Ranked input: column holding the rank (1 = best); '' to ignore it."}
    )
    score_column: str = field(
        default="score",
        metadata={"help": "Ranked input: column of a score (higher = better), used instead of rank; '' to ignore."},
    )
    chosen_column: str = field(default="chosen", metadata={"help": "Pairwise input: column of the preferred answer."})
    rejected_column: str = field(default="rejected", metadata={"help": "Pairwise input: column of the other answer."})
    margin_column: str = field(
        default="margin", metadata={"help": "Pairwise input: optional margin column (absent = 1.0 for every pair)."}
    )
    dataset_push_to_hub: bool = field(
        default=False, metadata={"help": "Push the processed DatasetDict to the Hub as dataset_hub_id."}
    )
    dataset_hub_id: str | None = field(
        default=None, metadata={"help": "Hub dataset repo for dataset_push_to_hub, e.g. your-name/preference-pairs."}
    )
    min_accuracy: float = field(
        default=0.0,
        metadata={"help": "Quality gate: lowest held-out accuracy allowed to push or replace an existing model."},
    )
    force_push: bool = field(
        default=False,
        metadata={"help": "Push / replace an existing model even when the quality gate fails."},
    )
    reward_stats_max_answers: int = field(
        default=20000,
        metadata={"help": "Training answers scored (a seeded sample if more) for the stored reward mean/std."},
    )


@dataclass
class PipelineRewardConfig(RewardConfig):
    """RewardConfig with defaults that run unchanged on CPU and GPU.

    TRL defaults bf16=True (an error on CPU-only machines) and activation checkpointing on (20% slower, pointless
    for a 66M-parameter model); we pick bf16 only where the device supports it and keep checkpointing off.
    """

    output_dir: str | None = field(
        default="reward_model", metadata={"help": "Where the trained model, tokenizer and model card are saved."}
    )
    bf16: bool | None = field(
        default=None,
        metadata={"help": "bf16 mixed precision. Unset = on when a bf16-capable GPU is present, off otherwise."},
    )
    activation_checkpointing: bool | None = field(
        default=None, metadata={"help": "Recompute activations in backward (saves memory, ~20% slower)."}
    )
    gradient_checkpointing: bool | None = field(
        default=None, metadata={"help": "Deprecated alias of activation_checkpointing."}
    )
    max_length: int | None = field(
        default=512, metadata={"help": "Maximum tokens of [CLS] prompt [SEP] answer [SEP]; longer pairs are cut."}
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "The initial learning rate for AdamW."})
    save_strategy: str = field(
        default="steps",
        metadata={
            "help": "Checkpoint schedule ('steps', 'epoch', 'no'). Checkpoints go to .<output_dir>.checkpoints/; "
            "rerunning the same command after a crash resumes from the last complete one."
        },
    )
    save_steps: float = field(default=200, metadata={"help": "Save a checkpoint every N optimizer steps."})
    save_total_limit: int | None = field(
        default=2, metadata={"help": "Checkpoints kept (the newest ones); the folder is removed after success."}
    )
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={
            "help": "'group_by_length' (default): batches of similar-length examples, less padding (measured 1.28x "
            "faster on CPU, bench/RESULTS.md); 'random': TRL's default."
        },
    )
    length_chunked_forward: bool = field(
        default=True,
        metadata={
            "help": "On CPU with one process, run each batch as near-equal-length pieces (less padding, same loss)."
        },
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "DDP: look for parameters without gradients each step (none in these models; slower)."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace a model already saved in output_dir (otherwise the run stops before training)."},
    )
    logging_steps: float = field(default=10, metadata={"help": "Log every N optimizer steps."})

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


def make_parser() -> TrlParser:
    return TrlParser(RECIPE_DATACLASSES)


def parse_recipe(
    argv: Sequence[str] | None = None,
) -> tuple[ScriptArguments, PipelineRewardConfig, ModelConfig]:
    """Parse `--config RECIPE` plus CLI overrides; unknown keys and bad values become one-line UserErrors."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise UserError("--config needs a recipe path, e.g. --config recipes/quickstart.yaml")
        recipe = argv[index + 1]
        try:
            open(recipe, encoding="utf-8").close()
        except OSError as err:
            raise UserError(f"cannot read recipe {recipe}: {err.strerror}") from err
    else:
        recipe = "(command line)"
    try:
        script_args, training_args, model_args = make_parser().parse_args_and_config(argv)
    except SystemExit as err:  # argparse already printed its one-line usage error
        if err.code in (0, None):
            raise
        raise UserError(f"invalid arguments for recipe {recipe} (see the message above)") from err
    except (ValueError, TypeError) as err:
        raise UserError(f"recipe {recipe}: {one_line(err)}") from err
    except Exception as err:  # yaml.YAMLError and friends
        if type(err).__module__.startswith("yaml"):
            raise UserError(f"recipe {recipe} is not valid YAML: {one_line(err)}") from err
        raise
    validate(script_args, training_args, model_args, recipe)
    return script_args, training_args, model_args


def validate(
    script_args: ScriptArguments, training_args: PipelineRewardConfig, model_args: ModelConfig, recipe: str
) -> None:
    if not 0.0 < script_args.test_size < 1.0:
        raise UserError(f"recipe {recipe}: test_size must be between 0 and 1 (got {script_args.test_size})")
    if script_args.objective not in ("pairwise", "ranking"):
        raise UserError(f"recipe {recipe}: objective must be 'pairwise' or 'ranking' (got {script_args.objective!r})")
    if script_args.truncation_side not in ("left", "right"):
        raise UserError(
            f"recipe {recipe}: truncation_side must be 'left' or 'right' (got {script_args.truncation_side!r})"
        )
    if training_args.max_length is None or not 8 <= training_args.max_length <= 512:
        # DistilBERT has 512 position embeddings; longer inputs crash inside the model.
        raise UserError(f"recipe {recipe}: max_length must be between 8 and 512 (got {training_args.max_length})")
    if not model_args.model_name_or_path:
        raise UserError(f"recipe {recipe}: model_name_or_path is required (e.g. embedded:all-MiniLM-L6-v2)")
    if training_args.push_to_hub and not training_args.hub_model_id:
        raise UserError(
            f"recipe {recipe}: push_to_hub is true but hub_model_id is not set (e.g. your-name/reward-model)"
        )
