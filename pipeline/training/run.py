"""The training phases of one run, each a function with typed inputs and outputs: the data step (once, under any
number of processes), the token ids the trainer sees, and the training itself (resumed from the last complete
checkpoint of the same run)."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from datasets import Dataset, DatasetDict
from torch.nn.utils.rnn import pad_sequence
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    set_seed,
)

from pipeline.core.errors import UserError
from pipeline.core.precision import native_bf16
from pipeline.data import DataReport, build_dataset, data_options, dataset_hub_target
from pipeline.model.encoding import EncodedPairs, encode_preference_pairs
from pipeline.recipe.config import PipelineRewardConfig, Recipe
from pipeline.training import (
    GroupCollator,
    PairwiseRewardTrainer,
    RankingRewardTrainer,
    pairwise_dataset,
    ranking_dataset,
)
from pipeline.training.checkpoints import dataset_fingerprint, resume_point, run_identity, write_run_file
from pipeline.training.distributed import build_data_once, decided_by_main, full_model
from pipeline.training.loss import answer_lengths, fit_length_expert


@dataclass(frozen=True)
class RunContext:
    """Where a run writes and which process this is."""

    output_dir: Path  # absolute, no symlinks: the folder that is replaced
    checkpoint_dir: Path  # beside output_dir, never inside it (the model dir is replaced whole)
    base_model: str  # resolved: something from_pretrained loads
    is_main: bool
    world_size: int


@dataclass
class PreparedData:
    dataset: DatasetDict
    report: DataReport | None  # only the main process has it
    dataset_repo: str | None  # Hub id to push the DatasetDict to, or None


@dataclass
class TrainingSet:
    """Token ids for the trainer, encoded with the Quick Start call (never TRL's text path)."""

    dataset: Dataset
    encoded: EncodedPairs
    truncated_pairs: int
    answer_truncated_pairs: int
    sequences_per_epoch: int
    length_expert_weight: float = 0.0  # 0 unless `length_expert`

    def stats(self) -> dict[str, int]:
        return {
            "truncated_pairs": self.truncated_pairs,
            "answer_truncated_pairs": self.answer_truncated_pairs,
            "sequences_per_epoch": self.sequences_per_epoch,
        }


@dataclass
class TrainedModel:
    model: PreTrainedModel  # one ordinary module on the main process, on the training device
    tokenizer: PreTrainedTokenizerBase
    train_set: TrainingSet
    train_runtime_s: float


def use_all_cpu_cores() -> None:
    """`accelerate launch` without a GPU sets OMP_NUM_THREADS=1, which halves CPU training speed on 2 cores.

    Only under accelerate (a plain `python pipeline/train.py` keeps whatever OMP_NUM_THREADS the user set).
    """
    launched_by_accelerate = any(key.startswith("ACCELERATE_") for key in os.environ)
    if torch.cuda.is_available() or torch.get_num_threads() > 1 or not launched_by_accelerate:
        return
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = max(1, len(os.sched_getaffinity(0)) // local_processes)
    if threads > 1:
        torch.set_num_threads(threads)


def prepare_data(recipe: Recipe, run: RunContext) -> PreparedData:
    """The data step, run once on the main process; the others load its result."""
    script = recipe.script
    options = data_options(script)  # column mapping, input shape, separate test file
    dataset_repo = dataset_hub_target(script)  # None unless dataset_push_to_hub
    dataset, report = build_data_once(
        lambda: build_dataset(
            script.dataset_path, script.test_size, script.split_seed, script.drop_empty_answers, **options
        ),
        run.checkpoint_dir / "data",
        run.is_main,
        run.world_size,
    )
    return PreparedData(dataset, report, dataset_repo)


def load_tokenizer(recipe: Recipe, run: RunContext) -> PreTrainedTokenizerBase:
    # Passed at load time so save_pretrained stores them: the Quick Start call then cuts long pairs as training did.
    return AutoTokenizer.from_pretrained(
        run.base_model, truncation_side=recipe.script.truncation_side, model_max_length=recipe.training.max_length
    )


def training_set(
    tokenizer: PreTrainedTokenizerBase,
    split: Dataset,
    max_length: int,
    objective: str,
    use_margin: bool,
    length_expert: bool = False,
) -> TrainingSet:
    """The train split as the chosen objective's examples: pairs, or whole prompt groups for `ranking`; with
    `length_expert`, the length-only preference model fitted to its pairs."""
    pairs = split.to_pandas()
    encoded = encode_preference_pairs(tokenizer, pairs, max_length)
    weight = length_expert_weight(encoded, tokenizer.sep_token_id) if length_expert else 0.0
    if objective == "ranking":
        dataset = ranking_dataset(pairs, encoded)
        sequences = sum(len(x) for x in dataset["answer_ids"])
    else:
        dataset = pairwise_dataset(encoded, pairs["margin"].to_numpy() if use_margin else None)
        sequences = 2 * len(pairs)
    return TrainingSet(
        dataset=dataset,
        encoded=encoded,
        truncated_pairs=int(encoded.truncated_pairs.sum()),
        answer_truncated_pairs=int(encoded.answer_truncated_pairs.sum()),
        sequences_per_epoch=int(sequences),
        length_expert_weight=weight,
    )


def length_expert_weight(encoded: EncodedPairs, sep_token_id: int | None, rows: int = 4096) -> float:
    """The length expert's weight on these pairs, with answer lengths counted as in training (`answer_lengths`)."""
    ids = encoded.texts.input_ids
    lengths = []
    for start in range(0, len(ids), rows):  # padded in slices: one tensor of every row could be large
        batch = pad_sequence([torch.tensor(x) for x in ids[start : start + rows]], batch_first=True)
        row_lengths = torch.tensor([len(x) for x in ids[start : start + rows]])
        mask = (torch.arange(batch.shape[1]) < row_lengths[:, None]).long()
        lengths.append(answer_lengths(batch, mask, sep_token_id).numpy())
    answer = np.concatenate(lengths)
    return fit_length_expert(answer[encoded.chosen], answer[encoded.rejected])


def planned_max_steps(args: PipelineRewardConfig, examples: int, world_size: int) -> int:
    """`max_steps` for the trainer: as given, or (with `min_train_steps`) that many steps when num_train_epochs
    would give fewer; -1 (train by epochs) otherwise."""
    if args.max_steps > 0 or not args.min_train_steps:
        return args.max_steps
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size
    by_epochs = math.ceil(math.ceil(examples / per_step) * args.num_train_epochs)
    return args.min_train_steps if by_epochs < args.min_train_steps else -1


def print_plan(recipe: Recipe, run: RunContext, data: PreparedData, train_set: TrainingSet) -> None:
    """What will be trained, how it was tokenized, and on which engine (main process only)."""
    args = recipe.training
    print(data.report.summary())
    print(
        f"  train pairs truncated to {args.max_length} tokens: {train_set.truncated_pairs} "
        f"(answer cut in {train_set.answer_truncated_pairs})"
    )
    unit = "prompts" if recipe.script.objective == "ranking" else "pairs"
    global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * run.world_size
    engine = PartialState().distributed_type.value  # NO, MULTI_CPU, MULTI_GPU, ...
    for name in ("FSDP", "DEEPSPEED"):  # the Accelerator sets these later; PartialState may still say MULTI_GPU
        if os.environ.get(f"ACCELERATE_USE_{name}", "").lower() == "true":
            if engine == "MULTI_CPU":  # Accelerate quietly falls back to DDP without GPUs
                print(f"warning: the Accelerate config asks for {name}, which needs GPUs; running DDP on CPU")
            else:
                engine = name
    print(f"training: world size {run.world_size} ({engine}) on {args.device.type}, global batch {global_batch} {unit}")
    steps = planned_max_steps(args, len(train_set.dataset), run.world_size)
    if steps != args.max_steps:
        print(f"min_train_steps: {steps} optimizer steps, more than {args.num_train_epochs:g} epoch(s) would give")
    print(f"precision: {precision_line(args)}")
    if args.length_expert:
        print(
            f"length expert: P(a wins over b) = sigmoid({train_set.length_expert_weight:.3f} x (log(1 + answer "
            "tokens of a) - the same of b)), fitted to the training pairs; the model trains beside it"
        )


def precision_line(args: PipelineRewardConfig) -> str:
    """The training precision and why (logged once)."""
    native, where = native_bf16(use_cpu=args.device.type == "cpu")
    if args.bf16:
        return f"bf16 autocast ({where})" if native else f"bf16 autocast, emulated ({where}; fp32 may be faster)"
    if args.fp16:
        return "fp16 autocast"
    return f"fp32 (bf16 would be native here: {where}; bf16: auto uses it)" if native else f"fp32 ({where})"


def check_disk_space(output_dir: Path, model: PreTrainedModel, args: PipelineRewardConfig) -> None:
    """Fail before training when the model (and its checkpoints, with optimizer state) clearly cannot fit."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    kept = 0 if args.save_strategy == "no" else (args.save_total_limit or 3) + 1  # +1: one is written before rotation
    needed = int(weights * (1 + 3 * kept) * 1.1) + (64 << 20)  # checkpoint = weights + two AdamW moments; + slack
    free = shutil.disk_usage(output_dir.resolve().parent).free
    if free < needed:
        raise UserError(
            f"output_dir {output_dir}: not enough free disk space (about {needed / 2**20:,.0f} MB needed for the "
            f"model and {kept} checkpoint(s), {free / 2**20:,.0f} MB free); free some space, choose another "
            "output_dir, or lower save_total_limit"
        )


def new_reward_model(recipe: Recipe, run: RunContext) -> PreTrainedModel:
    """The base model with a fresh one-output head, seeded: the same recipe gives the same head (and baseline)."""
    set_seed(recipe.training.seed)
    return AutoModelForSequenceClassification.from_pretrained(run.base_model, num_labels=1)


def train_model(recipe: Recipe, run: RunContext, data: PreparedData) -> TrainedModel | None:
    """Train (resuming the same run's last complete checkpoint); the trained model on the main process, else None."""
    script = recipe.script
    tokenizer = load_tokenizer(recipe, run)
    args = recipe.training
    train_set = training_set(
        tokenizer, data.dataset["train"], args.max_length, script.objective, script.use_margin, args.length_expert
    )
    if run.is_main:
        print_plan(recipe, run, data, train_set)
    model = new_reward_model(recipe, run)
    decided_by_main(lambda: check_disk_space(run.output_dir, model, recipe.training), run.is_main, run.world_size)
    identity = run_identity(
        {**vars(script), **recipe.training.to_dict(), **vars(recipe.model)}, dataset_fingerprint(data.dataset)
    )
    explicit = recipe.training.resume_from_checkpoint
    resume_from = decided_by_main(
        lambda: resume_point(run.checkpoint_dir, identity, explicit), run.is_main, run.world_size
    )
    # Checkpoints live beside the model, not inside it; we push ourselves, after the local copy is complete. The
    # trainer never sees hub_token: it would pickle it in plain text into every checkpoint's training_args.bin.
    args = dataclasses.replace(
        recipe.training, output_dir=str(run.checkpoint_dir), push_to_hub=False, hub_token=None,
        max_steps=planned_max_steps(recipe.training, len(train_set.dataset), run.world_size),
    )  # fmt: skip
    if script.objective == "ranking":
        trainer = RankingRewardTrainer(
            model=model,
            args=args,
            train_dataset=train_set.dataset,
            processing_class=tokenizer,
            data_collator=GroupCollator(tokenizer.pad_token_id),
            use_margin=script.use_margin,
            length_expert_weight=train_set.length_expert_weight,
        )
    else:
        trainer = PairwiseRewardTrainer(
            model=model,
            args=args,
            train_dataset=train_set.dataset,
            processing_class=tokenizer,
            length_expert_weight=train_set.length_expert_weight,
        )
    if run.is_main:
        write_run_file(run.checkpoint_dir, identity)
        if resume_from:
            print(f"resuming from {resume_from} (a previous run of this recipe stopped there)")
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    trained = full_model(trainer, run.is_main)  # a collective under FSDP/DeepSpeed: every process joins
    if trained is None:
        return None
    return TrainedModel(trained, tokenizer, train_set, round(result.metrics.get("train_runtime", 0.0), 1))
