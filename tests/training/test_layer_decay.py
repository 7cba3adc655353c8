"""Layer-wise learning-rate decay: which rate each parameter trains at."""

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
