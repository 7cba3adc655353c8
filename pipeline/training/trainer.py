"""The one base trainer: every override of a TRL/transformers trainer method lives here, each with its reason.

Each override is marked `@override`; `tests/test_internals.py` checks each one, and every private name of trl,
transformers, datasets, accelerate, torch or argparse the package uses, against the installed versions, so an
upgrade that changes one fails there, by name, instead of silently changing training. docs/coupling.md lists them
all with their why. The objectives (`objectives.py`) only choose their batches and their loss.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from datasets import Dataset
from torch.utils.data import Sampler
from transformers.trainer_pt_utils import get_length_grouped_indices
from trl import RewardTrainer
from typing_extensions import override

from pipeline.training.attention import fp32_attention_on_cpu
from pipeline.training.checkpoints import COMPLETE, delete_old_checkpoints
from pipeline.training.chunked_forward import LengthChunkedForward
from pipeline.training.loss import answer_lengths, batch_correlation, length_expert_offsets, length_slope
from pipeline.training.optimizer import with_layer_decay


class EpochSeededLengthGroupedSampler(Sampler[int]):
    """transformers' length-grouped order, drawn from `seed + epoch` alone.

    The stock LengthGroupedSampler draws from the global RNG, which a resumed run restores only after it has built
    the epoch's order: a run resumed mid-epoch then skips the wrong batches (some pairs trained twice, some never).
    No `generator` attribute on purpose: accelerate would replace its state with rank 0's at every epoch.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        # Called by accelerate's DataLoaderShard.set_epoch, which transformers calls at the start of each epoch.
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    @override
    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class QRewardTrainer(RewardTrainer):
    """TRL's RewardTrainer plus: complete-only checkpoints, resumable length-grouped batches, a real tokens/s log,
    length-chunked CPU forwards, and the bookkeeping TRL's metrics need from a loss TRL did not compute.

    A subclass sets `signature_columns` (the dataset columns its collator reads) and `trl_prepares_dataset`, and
    defines `compute_loss`; nothing else.
    """

    signature_columns: ClassVar[tuple[str, ...]]
    # False where examples are already token ids in a layout TRL's text preprocessing does not know.
    trl_prepares_dataset: ClassVar[bool] = True
    _last_log: tuple[float, int] | None = None  # (time, _total_train_tokens) at the previous training log

    @override
    def __init__(self, *args: Any, length_expert_weight: float = 0.0, **kwargs: Any) -> None:
        self.length_expert_weight = length_expert_weight  # see `_length_expert`; 0 = off
        super().__init__(*args, **kwargs)

    # -- batches ---------------------------------------------------------------------------------------------------

    @override
    def _prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Any:
        # TRL would tokenize text columns; examples it does not know are already encoded and cut to max_length.
        if not self.trl_prepares_dataset:
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)

    @override
    def _set_signature_columns_if_needed(self) -> None:
        # transformers keeps only these columns of the dataset; TRL's list would drop our `length` (and groups).
        if self._signature_columns is None:
            self._signature_columns = list(self.signature_columns)

    @override
    def _get_train_sampler(self, train_dataset: Any = None) -> Sampler | None:
        # The stock length-grouped order cannot be replayed by a resumed run (see EpochSeededLengthGroupedSampler).
        dataset = self.train_dataset if train_dataset is None else train_dataset
        column = self.args.length_column_name
        if (
            self.args.train_sampling_strategy == "group_by_length"
            and isinstance(dataset, Dataset)
            and column in dataset.column_names
        ):
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            # `data_seed`, as transformers documents it: the samplers' seed, `seed` when unset.
            seed = self.args.seed if self.args.data_seed is None else self.args.data_seed
            return EpochSeededLengthGroupedSampler(dataset[column], batch, seed)
        return super()._get_train_sampler(train_dataset)

    @property
    def _autocast(self) -> bool:
        # Mixed precision: Accelerate runs every forward under bf16/fp16 autocast.
        return bool(self.args.bf16 or self.args.fp16)

    def _reward_forward(self, model: torch.nn.Module) -> torch.nn.Module | Callable[..., Any]:
        """On CPU in fp32, one process: the step's forward as near-equal-length pieces (see LengthChunkedForward).
        Not under autocast: bf16 kernels lose more on small pieces than padding costs (bench/RESULTS.md)."""
        wanted = getattr(self.args, "length_chunked_forward", False)  # a plain RewardConfig has no such key
        chunk = wanted and not self._autocast and self.args.device.type == "cpu" and self.accelerator.num_processes == 1
        return LengthChunkedForward(model) if chunk else model

    # -- length control --------------------------------------------------------------------------------------------

    def _answer_lengths(self, inputs: dict[str, Any]) -> torch.Tensor:
        return answer_lengths(inputs["input_ids"], inputs["attention_mask"], self.processing_class.sep_token_id)

    def _length_expert(self, mode: str, lengths: torch.Tensor) -> torch.Tensor | None:
        """The length-only expert's log-odds per row when training with `length_expert`, else None. They join the
        rewards in the training loss only (a product of experts), so the model learns what length does not explain
        and is evaluated and saved alone."""
        if mode != "train" or not self.length_expert_weight:
            return None
        return length_expert_offsets(self.length_expert_weight, lengths)

    def _length_penalty(self, mode: str, rewards: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`length_bias_penalty` x the squared covariance of the batch's rewards with its standardised answer lengths
        (each process's own batch); their correlation is logged as `length_correlation` either way."""
        with torch.no_grad():
            correlation = batch_correlation(rewards.float(), lengths)
            shared = self.accelerator.gather_for_metrics(correlation.view(1)).mean()
        self._record(mode, length_correlation=shared.item())
        weight = getattr(self.args, "length_bias_penalty", 0.0)  # a plain RewardConfig has no such key
        return weight * length_slope(rewards.float(), lengths).pow(2) if weight else rewards.new_zeros(())

    # -- metrics ---------------------------------------------------------------------------------------------------

    def _count_tokens(self, mode: str, attention_mask: torch.Tensor) -> None:
        """TRL's token count (logged as `num_tokens`, read by the tokens/s log) for a loss TRL did not compute."""
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(attention_mask.sum()).sum().item()
            # Tensor-parallel ranks see the same batch: TRL divides the gathered count by their number.
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    def _record(self, mode: str, **values: float) -> None:
        """Per-step metrics that TRL's `log` averages into the next log entry (in this order)."""
        for name, value in values.items():
            self._metrics[mode][name].append(value)

    @override
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Adds `tokens_per_s`: real (non-padding) training tokens per second since the previous log.
        if self.model.training and "loss" in logs:
            now, tokens = time.perf_counter(), self._total_train_tokens
            if self._last_log is not None and now > self._last_log[0]:
                logs["tokens_per_s"] = round((tokens - self._last_log[1]) / (now - self._last_log[0]), 1)
            self._last_log = (now, tokens)
        super().log(logs, start_time)

    @override
    def _inner_training_loop(self, *args: Any, **kwargs: Any) -> Any:
        # Starts the tokens/s clock with the training loop, so the first log has a rate too.
        self._last_log = (time.perf_counter(), self._total_train_tokens)
        # Autocast on CPU: attention in fp32 for the loop's duration (see attention.py).
        with fp32_attention_on_cpu(self.model, self._autocast and self.args.device.type == "cpu"):
            return super()._inner_training_loop(*args, **kwargs)

    @override
    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        # transformers' optimizer has one learning rate for all layers; `layer_lr_decay` < 1 splits its groups.
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        decay = getattr(self.args, "layer_lr_decay", 1.0)  # a plain RewardConfig has no such key
        if fresh and decay != 1.0:
            self.optimizer = optimizer = with_layer_decay(optimizer, self.model if model is None else model, decay)
        return optimizer

    # -- checkpoints -----------------------------------------------------------------------------------------------

    @override
    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        # Resume must never pick a torn checkpoint: mark it complete once every process wrote its part.
        # Old checkpoints go only after that (transformers would delete them first: with save_total_limit 1 a crash
        # there would leave no complete one), marker first (a crash mid-delete leaves a folder that no longer counts,
        # not a complete-looking one missing its optimizer).
        limit, self.args.save_total_limit = self.args.save_total_limit, None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            run_dir = Path(self._get_output_dir(trial=trial))
            (run_dir / f"checkpoint-{self.state.global_step}" / COMPLETE).write_text(f"{self.state.global_step}\n")
            delete_old_checkpoints(run_dir, limit, self.state.global_step)
