"""Every TRL/transformers internal that `QRewardTrainer` overrides or reads still exists and takes what we pass it.

A TRL or transformers upgrade that renames or reshapes one fails here, naming the versions and the internal,
instead of silently changing training. One tiny ranking trainer, trained for 4 steps (2 epochs, 2 checkpoints),
shows each override is still called.
"""

from __future__ import annotations

import inspect
from collections import defaultdict
from pathlib import Path
from typing import Any

import accelerate
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import transformers
import trl
from transformers import Trainer
from transformers.trainer_pt_utils import get_length_grouped_indices
from trl import RewardTrainer

from pipeline.model.encoding import encode_preference_pairs
from pipeline.training import GroupCollator, PairwiseRewardTrainer, RankingRewardTrainer, ranking_dataset
from pipeline.training.checkpoints import COMPLETE
from pipeline.training.chunked_forward import LengthChunkedForward
from pipeline.training.trainer import EpochSeededLengthGroupedSampler, QRewardTrainer

VERSIONS = f"trl {trl.__version__} / transformers {transformers.__version__}"
# Internals of RewardTrainer/Trainer that QRewardTrainer overrides: each has a test below.
OVERRIDDEN = {
    "__init__",
    "_prepare_dataset",
    "_set_signature_columns_if_needed",
    "_get_train_sampler",
    "log",
    "_inner_training_loop",
    "_save_checkpoint",
}


def changed(internal: str, what: str) -> str:
    return f"{VERSIONS}: {internal} {what}; see pipeline/training/trainer.py"


def assert_takes(owner: Any, name: str, *args: str, method: bool = True, **kwargs: str) -> None:
    """`owner.name` exists and accepts the call we make (argument names stand in for the values)."""
    internal = f"{getattr(owner, '__name__', owner)}.{name}"
    function = getattr(owner, name, None)
    assert callable(function), changed(internal, "no longer exists")
    try:
        inspect.signature(function).bind(*([None] if method else []), *args, **kwargs)
    except TypeError:
        shown = ", ".join([*args, *(f"{k}=" for k in kwargs)])
        pytest.fail(changed(internal, f"no longer takes ({shown})"))


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.recipe.config import PipelineRewardConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = pd.DataFrame(
        {
            "prompt": ["why"] * 3 + ["how"],
            "chosen": ["because light", "because light", "no", "boil water"],
            "rejected": ["no", "bad", "bad", "fry"],
            "margin": [1.0, 2.0, 1.0, 1.0],
        }
    )
    dataset = ranking_dataset(pairs, encode_preference_pairs(tokenizer, pairs, max_length=64))
    output_dir = tmp_path_factory.mktemp("internals")
    args = PipelineRewardConfig(output_dir=str(output_dir), num_train_epochs=2, per_device_train_batch_size=1,
                                learning_rate=1e-2, logging_steps=1, save_steps=2, save_total_limit=1,
                                report_to="none", disable_tqdm=True)  # fmt: skip
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    trainer = RankingRewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                   data_collator=GroupCollator(tokenizer.pad_token_id))  # fmt: skip
    epochs: list[int] = []
    original = EpochSeededLengthGroupedSampler.set_epoch

    def record(sampler: EpochSeededLengthGroupedSampler, epoch: int) -> None:
        epochs.append(epoch)
        original(sampler, epoch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpochSeededLengthGroupedSampler, "set_epoch", record)
        trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {"trainer": trainer, "dataset": dataset, "epochs": epochs, "logged": logged, "output_dir": output_dir}


def test_every_override_of_an_internal_is_in_the_base_class_and_tested() -> None:
    overrides = {name for name in vars(QRewardTrainer) if callable(getattr(RewardTrainer, name, None))}
    assert overrides == OVERRIDDEN, "QRewardTrainer overrides changed: give each a test here and a one-line why"
    for objective in (PairwiseRewardTrainer, RankingRewardTrainer):
        inherited = {name for name in vars(objective) if callable(getattr(RewardTrainer, name, None))}
        assert inherited <= {"__init__", "compute_loss"}, f"{objective.__name__} overrides {inherited}"


def test_save_checkpoint(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "_save_checkpoint", "model", "trial")
    # We lift save_total_limit during the save so transformers deletes nothing before our marker is written.
    assert "save_total_limit" in inspect.getsource(Trainer._save_checkpoint), changed(
        "Trainer._save_checkpoint", "no longer reads args.save_total_limit to delete old checkpoints"
    )
    kept = sorted(p.name for p in trained["output_dir"].glob("checkpoint-*"))
    assert kept == ["checkpoint-4"], changed("Trainer._save_checkpoint", f"left {kept}, not only the newest")
    assert (trained["output_dir"] / "checkpoint-4" / COMPLETE).is_file(), changed(
        "RewardTrainer._save_checkpoint", "is no longer called at each save (no completeness marker)"
    )
    assert trained["trainer"].args.save_total_limit == 1


def test_get_output_dir(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "_get_output_dir", trial="trial")
    trainer = trained["trainer"]
    assert trainer._get_output_dir(trial=None) == trainer.args.output_dir, changed(
        "Trainer._get_output_dir", "no longer returns args.output_dir outside hyperparameter search"
    )


def test_init() -> None:
    # Ours only takes `length_expert_weight` and passes everything else on, as the objectives and run.py call it.
    assert_takes(RewardTrainer, "__init__", model="m", args="a", train_dataset="d", processing_class="t",
                 data_collator="c", callbacks="cb")  # fmt: skip
    assert "length_expert_weight" in inspect.signature(QRewardTrainer.__init__).parameters


def test_inner_training_loop(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "_inner_training_loop")
    assert "_inner_training_loop" in inspect.getsource(Trainer.train), changed(
        "Trainer.train", "no longer runs _inner_training_loop"
    )
    # Only our override starts the tokens/s clock before the first log.
    assert "tokens_per_s" in trained["logged"][0], changed("Trainer._inner_training_loop", "is no longer called")


def test_log(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "log", "logs", "start_time")
    for entry in trained["logged"]:
        missing = {"tokens_per_s", "num_tokens", "accuracy", "mean_reward"} - set(entry)
        assert not missing, changed("RewardTrainer.log", f"no longer logs {sorted(missing)} from _metrics")


def test_get_train_sampler(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "_get_train_sampler", "train_dataset")
    trainer = trained["trainer"]
    for name in ("train_sampling_strategy", "length_column_name", "train_batch_size", "gradient_accumulation_steps",
                 "data_seed"):  # fmt: skip
        assert hasattr(trainer.args, name), changed("TrainingArguments", f"has no {name}")
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, EpochSeededLengthGroupedSampler)
    assert sampler.seed == (trainer.args.seed if trainer.args.data_seed is None else trainer.args.data_seed)
    # The order of an epoch depends on set_epoch reaching our sampler through accelerate's data loader.
    epochs = trained["epochs"]
    assert sorted(set(epochs)) == [0, 1] and epochs == sorted(epochs), (
        changed("Trainer._inner_training_loop", f"set the sampler's epoch to {epochs}, not 0 then 1")
        + f" (accelerate {accelerate.__version__})"
    )


def test_get_length_grouped_indices() -> None:
    assert_takes(transformers.trainer_pt_utils, "get_length_grouped_indices", "lengths", "batch_size",
                 method=False, generator="generator")  # fmt: skip
    indices = get_length_grouped_indices([3, 1, 2, 5, 4], 2, generator=torch.Generator().manual_seed(0))
    assert sorted(indices) == [0, 1, 2, 3, 4], changed("get_length_grouped_indices", "no longer returns a permutation")


def test_set_signature_columns_if_needed(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "_set_signature_columns_if_needed")
    trainer = trained["trainer"]
    assert trainer._signature_columns == ["answer_ids", "ranks", "length"], changed(
        "Trainer._signature_columns", "is no longer filled by _set_signature_columns_if_needed"
    )


def test_prepare_dataset(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "_prepare_dataset", "dataset", "processing_class", "args", "dataset_name")
    assert trained["trainer"].train_dataset is trained["dataset"], changed(
        "RewardTrainer._prepare_dataset", "is no longer how RewardTrainer.__init__ prepares the train dataset"
    )


def test_metrics_total_train_tokens_and_tp_size(trained: dict[str, Any]) -> None:
    trainer = trained["trainer"]
    metrics = getattr(trainer, "_metrics", None)
    assert isinstance(metrics, dict) and set(metrics) == {"train", "eval"}, changed(
        "RewardTrainer._metrics", "is no longer {'train': ..., 'eval': ...}"
    )
    assert all(isinstance(metrics[m], defaultdict) and metrics[m].default_factory is list for m in metrics), changed(
        "RewardTrainer._metrics", "is no longer a defaultdict(list) per mode"
    )
    assert isinstance(getattr(trainer, "_tp_size", None), int), changed("RewardTrainer._tp_size", "is gone")
    total = getattr(trainer, "_total_train_tokens", None)
    assert isinstance(total, int) and total > 0, changed("RewardTrainer._total_train_tokens", "is gone")
    assert trained["logged"][-1]["num_tokens"] == total, changed(
        "RewardTrainer.log", "no longer logs _total_train_tokens as num_tokens"
    )


def test_pairwise_loss_is_trls_on_our_forward(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "compute_loss", "model", "inputs", "return_outputs", "num_items_in_batch")
    trainer = trained["trainer"]
    model = trainer.model.eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (4, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 3:] = mask[2, 5:] = 0  # chosen rows 0-1, rejected rows 2-3, different lengths: several pieces
    with torch.no_grad():
        loss = RewardTrainer.compute_loss(
            trainer, LengthChunkedForward(model), {"input_ids": ids, "attention_mask": mask}
        )
        rewards = model(input_ids=ids, attention_mask=mask).logits[:, 0]
    trainer._metrics["eval"].clear()
    expected = -F.logsigmoid(rewards[:2] - rewards[2:]).mean()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0, msg=changed("RewardTrainer.compute_loss", "changed"))
