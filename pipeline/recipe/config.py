"""The recipe's keys: dataclasses of the pipeline's own keys and of the training keys (TRL's RewardConfig with
defaults that run unchanged on CPU and GPU), and the parsed recipe."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from trl import ModelConfig, RewardConfig
from typing_extensions import override

from pipeline.core.precision import native_bf16


def key(default: Any, help: str) -> Any:
    """A recipe key: its default and the help text `--help` shows."""
    return field(default=default, metadata={"help": help})


@dataclass
class ScriptArguments:
    """The pipeline's own recipe keys: the data, its split, the objective, evaluation and the quality gate.

    A recipe's keys are these, `PipelineRewardConfig`'s and `trl.ModelConfig`'s; each field's `metadata["help"]`
    is the help `--help` shows, and the recipe parser checks every value before any work.

    Args:
        dataset_path (`str`, *optional*, defaults to `"data/answers.csv"`):
            The input: ranked answers or preference pairs (see `pipeline.data.build_dataset`).
        test_size (`float`, *optional*, defaults to `0.2`):
            The fraction of prompts held out for evaluation.
        objective (`str`, *optional*, defaults to `"pairwise"`):
            `"pairwise"` or `"ranking"`.
        **other keys:
            The other fields, each with its default and help text below.

    Example:

    ```python
    >>> from pipeline.recipe.config import ScriptArguments
    >>> args = ScriptArguments(dataset_path="data/answers.csv", test_size=0.1)
    >>> args.objective, args.split_seed
    ('pairwise', 42)
    ```
    """

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
        256,
        "Answers behind the stored reward mean/std: the held-out answers (already scored), plus a seeded sample "
        "of training answers when those are fewer than this. The interval of the mean is stored beside it.",
    )
    baseline_max_pairs: int = key(
        100,
        "Held-out pairs the untrained base model is scored on (a seeded sample if more), as a reference; its "
        "accuracy comes with its interval. The trained model is always scored on every held-out pair.",
    )


@dataclass
class PipelineRewardConfig(RewardConfig):
    """TRL's `RewardConfig` with defaults that run unchanged on CPU and GPU, and the pipeline's training keys.

    TRL defaults bf16=True (an error on CPU-only machines) and activation checkpointing on (slower, and pointless
    for a model this small); we pick bf16 only where the hardware runs it natively and keep checkpointing off.

    Args:
        output_dir (`str`, *optional*, defaults to `"reward_model"`):
            Where the trained model, its tokenizer and model card are saved.
        bf16 (`bool`, *optional*):
            bf16 autocast; unset: on where bf16 is native (a CUDA GPU with bf16, a CPU with AVX512-BF16 or AMX).
        **other keys:
            `trl.RewardConfig`'s (and `transformers.TrainingArguments`') keys, and the fields below, each with its
            default and help text.

    Example:

    ```python
    >>> from pipeline.recipe.config import PipelineRewardConfig
    >>> config = PipelineRewardConfig(output_dir="reward_model", use_cpu=True, bf16=False)
    >>> config.activation_checkpointing, config.max_length, config.train_sampling_strategy
    (False, 512, 'group_by_length')
    ```
    """

    output_dir: str | None = key("reward_model", "Where the trained model, tokenizer and model card are saved.")
    bf16: bool | None = key(
        None,
        "bf16 autocast: true, false or auto. Auto (the default, also when unset) is on where bf16 is native (a CUDA "
        "GPU with bf16, a CPU with AVX512-BF16 or AMX), off elsewhere. Weights, optimizer and evaluation stay fp32.",
    )
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
        True,
        "On CPU in fp32 with one process, run each batch as near-equal-length pieces (less padding, same loss). "
        "Not under bf16, whose kernels gain more from whole batches (bench/RESULTS.md, 'Precision and whole-run "
        "time').",
    )
    length_bias_penalty: float = key(
        0.0,
        "Weight of a penalty on the squared covariance of rewards with answer length (tokens, standardised within "
        "each batch), so the model does not learn 'longer (or shorter) wins'. 0 = off; measured in bench/RESULTS.md "
        "('Training defaults, length control and precision').",
    )
    length_expert: bool = key(
        False,
        "Train against a length-only preference model fitted to the training pairs (product of experts): the saved "
        "model is pushed to learn what answer length does not explain. Off in the shipped recipes: it cut length bias "
        "but lost accuracy on data not tuned on (bench/RESULTS.md, 'Cross-validated defaults').",
    )
    min_train_steps: int = key(
        0,
        "At least this many optimizer steps: a small training set gets more epochs than num_train_epochs, a large "
        "one trains num_train_epochs. 0 = off; max_steps, when set, wins.",
    )
    layer_lr_decay: float = key(
        1.0,
        "Layer-wise learning-rate decay: the head trains at learning_rate, each encoder layer below at this times "
        "the one above, the embeddings lowest. 1 = off (one rate); measured in bench/RESULTS.md.",
    )
    ddp_find_unused_parameters: bool | None = key(
        False, "DDP: look for parameters without gradients each step (none in these models; slower)."
    )
    overwrite_output_dir: bool = key(
        False, "Replace a model already saved in output_dir (otherwise the run stops before training)."
    )
    logging_steps: float = key(10, "Log every N optimizer steps.")

    @override
    def __post_init__(self) -> None:
        if self.bf16 is None:
            self.bf16 = not self.fp16 and native_bf16(self.use_cpu)[0]
        if self.bf16 and not torch.accelerator.is_available():
            self.use_cpu = True  # transformers refuses bf16 without an accelerator unless use_cpu is set
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


class Recipe(NamedTuple):
    """A parsed, validated recipe; unpacks as (script, training, model)."""

    script: ScriptArguments
    training: PipelineRewardConfig
    model: ModelConfig
