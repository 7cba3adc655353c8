"""Multi-process plumbing without launching processes: failures reach every rank, gathered weights load whole."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoModelForSequenceClassification

from pipeline.core.errors import UserError
from pipeline.training import distributed
from pipeline.training.distributed import build_data_once, decided_by_main, full_model


@pytest.fixture
def broadcasts(monkeypatch) -> list[list]:
    """Records what the main process broadcasts; a non-main process "receives" the last one recorded."""
    sent: list[list] = []

    def broadcast(box: list, from_process: int = 0) -> list:
        if sent and box == [None, None]:  # receiving side
            box[:] = sent[-1]
        else:
            sent.append(list(box))
        return box

    monkeypatch.setattr(distributed, "broadcast_object_list", broadcast)
    return sent


def test_an_unexpected_crash_on_the_main_process_is_broadcast_before_it_is_raised(broadcasts: list[list]) -> None:
    def decide() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):  # the main process keeps its traceback
        decided_by_main(decide, is_main=True, world_size=2)
    assert broadcasts[-1][1].startswith("the main process failed (OSError: [Errno 28] No space left on device)")
    with pytest.raises(UserError, match="the main process failed"):  # the others stop too instead of hanging
        decided_by_main(decide, is_main=False, world_size=2)


def test_a_user_error_on_the_main_process_is_the_same_line_everywhere(broadcasts: list[list]) -> None:
    def decide() -> None:
        raise UserError("data/answers.csv: row 3: rank is empty")

    for is_main in (True, False):
        with pytest.raises(UserError, match=r"^data/answers.csv: row 3: rank is empty$"):
            decided_by_main(decide, is_main=is_main, world_size=2)


def test_gathered_weights_load_into_the_trainers_config_in_fp32(tiny_model_dir: Path) -> None:
    trained = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    trained.config.pad_token_id = 3  # set during training (e.g. a base model without one): must survive
    half = {k: v.to(torch.bfloat16) for k, v in trained.state_dict().items()}  # a sharded engine's low-precision copy
    accelerator = SimpleNamespace(
        get_state_dict=lambda wrapped: half, unwrap_model=lambda m: m, device=torch.device("cpu")
    )
    trainer = SimpleNamespace(
        is_fsdp_enabled=True, is_deepspeed_enabled=False, model=trained, model_wrapped=trained, accelerator=accelerator
    )
    assert full_model(trainer, is_main=False) is None
    model = full_model(trainer, is_main=True)
    assert model is not trained and model.config.pad_token_id == 3
    for name, value in model.state_dict().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, half[name].float(), rtol=0, atol=0)


def test_the_data_step_runs_once_and_a_stale_copy_is_not_used(tmp_path: Path, broadcasts: list[list]) -> None:
    def dataset(values: list[int]) -> DatasetDict:
        return DatasetDict({"train": Dataset.from_dict({"a": values}), "test": Dataset.from_dict({"a": [0]})})

    calls: list[str] = []

    def build(values: list[int], who: str):
        def run():
            calls.append(who)
            return dataset(values), "report"

        return run

    shared = tmp_path / ".reward_model.checkpoints" / "data"
    main, report = build_data_once(build([1, 2], "main"), shared, is_main=True, world_size=2)
    assert report == "report" and main["train"]["a"] == [1, 2]
    other, report = build_data_once(build([1, 2], "other"), shared, is_main=False, world_size=2)
    assert calls == ["main"] and report is None  # the other rank loaded the main rank's copy
    assert other["train"]["a"] == [1, 2]
    # A node that does not share the main rank's disk finds its own copy of an earlier run: it builds instead.
    broadcasts[-1][0] = "train:new,test:new"
    again, _ = build_data_once(build([1, 2, 3], "other"), shared, is_main=False, world_size=2)
    assert calls == ["main", "other"] and again["train"]["a"] == [1, 2, 3]


def test_a_model_trained_under_bf16_autocast_is_evaluated_in_fp32(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Accelerate wraps forward in autocast for mixed precision; the model handed to the evaluation must not keep it,
    or the held-out accuracy would be a bf16 number (ties, flipped pairs) instead of the Quick Start's fp32 one."""
    import pandas as pd
    from transformers import AutoTokenizer

    from pipeline.model.encoding import encode_preference_pairs
    from pipeline.recipe.config import PipelineRewardConfig
    from pipeline.training import PairwiseRewardTrainer, pairwise_dataset

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = pd.DataFrame({"prompt": ["why", "how"], "chosen": ["because", "boil it"], "rejected": ["no", "fry"]})
    args = PipelineRewardConfig(output_dir=str(tmp_path), max_steps=1, bf16=True, report_to="none",
                                disable_tqdm=True, save_strategy="no")  # fmt: skip
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    dataset = pairwise_dataset(encode_preference_pairs(tokenizer, pairs, 32), None)
    trainer = PairwiseRewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    trained = full_model(trainer, is_main=True)
    plain = AutoModelForSequenceClassification.from_config(trained.config)
    plain.load_state_dict(trained.state_dict())
    ids = torch.tensor([tokenizer("why is the sky blue", "because of the way air scatters light")["input_ids"]])
    with torch.no_grad():
        assert trained.eval()(input_ids=ids).logits.item() == plain.eval()(input_ids=ids).logits.item()
