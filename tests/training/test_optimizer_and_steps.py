"""Layer-wise learning-rate decay (which rate each parameter trains at) and min_train_steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from pipeline.training.optimizer import layer_depths, with_layer_decay


def test_each_layer_trains_at_decay_times_the_one_above(tiny_model_dir: Path) -> None:
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    depths = layer_depths(model)
    layers = model.config.n_layers
    assert depths["distilbert.embeddings.word_embeddings.weight"] == 0
    assert depths["distilbert.transformer.layer.0.attention.q_lin.weight"] == 1
    assert depths[f"distilbert.transformer.layer.{layers - 1}.ffn.lin2.bias"] == layers
    assert depths["classifier.weight"] == depths["pre_classifier.bias"] == layers + 1
    params = dict(model.named_parameters())
    base = torch.optim.AdamW([{"params": [p for n, p in params.items() if "bias" not in n], "weight_decay": 0.01},
                              {"params": [p for n, p in params.items() if "bias" in n], "weight_decay": 0.0}],
                             lr=1e-3)  # fmt: skip
    defaults = dict(base.defaults)
    decayed = with_layer_decay(base, model, 0.5)
    lr = {id(p): (g["lr"], g["weight_decay"]) for g in decayed.param_groups for p in g["params"]}
    assert len(lr) == len(params)  # every parameter once
    for name, p in params.items():
        assert lr[id(p)][0] == pytest.approx(1e-3 * 0.5 ** (layers + 1 - depths[name]))
        assert lr[id(p)][1] == (0.0 if "bias" in name else 0.01)  # weight-decay groups kept
    assert decayed is base and decayed.defaults == defaults


@pytest.mark.parametrize(
    ("examples", "epochs", "min_steps", "max_steps", "expected"),
    [
        (230, 4.0, 0, -1, -1),  # off: by epochs
        (230, 1.0, 80, -1, 80),  # 29 steps an epoch: 80 steps instead
        (646, 1.0, 80, -1, -1),  # 81 steps an epoch already
        (640, 1.0, 80, -1, -1),  # exactly 80
        (230, 1.0, 80, 10, 10),  # max_steps wins
    ],
)
def test_min_train_steps(examples: int, epochs: float, min_steps: int, max_steps: int, expected: int) -> None:
    from types import SimpleNamespace

    from pipeline.training.run import planned_max_steps

    args = SimpleNamespace(max_steps=max_steps, min_train_steps=min_steps, per_device_train_batch_size=8,
                           gradient_accumulation_steps=1, num_train_epochs=epochs)  # fmt: skip
    assert planned_max_steps(args, examples, world_size=1) == expected
