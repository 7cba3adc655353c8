"""The train command: ranked file -> pairs -> TRL RewardTrainer -> exact held-out accuracy -> saved (and pushed) model.

`q2-reward train --config recipes/quickstart.yaml` (one process), or `accelerate launch pipeline/train.py --config ...`
(one process or several). This module only orders the phases; each lives with its step (training, evaluation,
publishing).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from pipeline.core.errors import INTERRUPTED_RESUMABLE, UserError, cli_entry
from pipeline.core.files import exclusive_output
from pipeline.core.hub import push_folder
from pipeline.data import push_dataset
from pipeline.data.conversation import CONFIG_KEY, CONVERSATION_FORMAT
from pipeline.evaluation.heldout import HeldOutEvaluation, UntrainedBaseline, evaluate_trained, untrained_baseline
from pipeline.evaluation.overlap import train_prompts_record
from pipeline.model.base import resolve_base_model
from pipeline.publishing.model_card import without_local_paths
from pipeline.publishing.model_dir import CardInfo, check_output_dir, choose_destination, save_model_dir
from pipeline.recipe.config import Recipe
from pipeline.recipe.parser import parse_recipe
from pipeline.training.checkpoints import checkpoint_dir_for
from pipeline.training.distributed import decided_by_main, leave_process_group
from pipeline.training.run import (
    PreparedData,
    RunContext,
    TrainedModel,
    load_tokenizer,
    new_reward_model,
    prepare_data,
    train_model,
    use_all_cpu_cores,
)

RECIPE_KEYS_IN_CARD = (
    "model_name_or_path", "dataset_path", "test_path", "input_shape", "objective", "train_sampling_strategy",
    "test_size", "split_seed", "use_margin", "truncation_side", "max_length",
    "num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "warmup_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "weight_decay", "bf16", "seed", "length_expert",
    "length_bias_penalty", "layer_lr_decay", "min_train_steps",
)  # fmt: skip


def plan_run(recipe: Recipe) -> RunContext:
    """Checks that need no data, before any work: the output folder, and the base model (built or found)."""
    args = recipe.training
    # Absolute, no symlinks: "." or "out/" or a link must name the folder that is replaced, not its entry.
    output_dir = Path(args.output_dir).resolve()
    is_main, world_size = args.process_index == 0, args.world_size
    inputs = (recipe.script.dataset_path, recipe.script.test_path)
    decided_by_main(lambda: check_output_dir(output_dir, args.overwrite_output_dir, inputs), is_main, world_size)
    base_model = resolve_base_model(recipe.model.model_name_or_path)
    return RunContext(output_dir, checkpoint_dir_for(output_dir), base_model, is_main, world_size)


def baseline_phase(recipe: Recipe, run: RunContext, data: PreparedData) -> UntrainedBaseline | None:
    """The untrained model (the same seeded head training starts from) on a sample of the held-out pairs, before
    training: main process only."""
    if not run.is_main:
        return None
    script, args = recipe.script, recipe.training
    return untrained_baseline(
        new_reward_model(recipe, run).to(args.device),
        load_tokenizer(recipe, run),
        data.dataset["test"].to_pandas(),
        max_length=args.max_length,
        batch_size=script.eval_batch_size,
        max_pairs=script.baseline_max_pairs,
        seed=args.seed,
    )


def evaluate_phase(
    recipe: Recipe, data: PreparedData, trained: TrainedModel, baseline: UntrainedBaseline
) -> HeldOutEvaluation:
    evaluation = evaluate_trained(
        trained.model,
        trained.tokenizer,
        data.dataset["test"].to_pandas(),
        trained.train_set.encoded,
        baseline,
        max_length=recipe.training.max_length,
        batch_size=recipe.script.eval_batch_size,
        seed=recipe.training.seed,
        reward_stats_max_answers=recipe.script.reward_stats_max_answers,
    )
    trained.model.config.update(evaluation.reward_stats)  # in config.json: (score - reward_mean) / reward_std
    trained.model.config.update({CONFIG_KEY: CONVERSATION_FORMAT})  # how conversations were rendered to text
    return evaluation


def results_of(
    data: PreparedData, trained: TrainedModel, evaluation: HeldOutEvaluation, started: float
) -> dict[str, Any]:
    """eval_results.json: the headline metrics, the split and the timings."""
    return {
        **evaluation.report["model"],
        "best_trivial_baseline": evaluation.report["best_trivial_baseline"],
        "split": "test",
        "test_prompts": data.report.splits["test"]["prompts"],
        "train_pairs": data.report.splits["train"]["pairs"],
        **evaluation.reward_stats,
        "train_runtime_s": trained.train_runtime_s,
        "total_runtime_s": round(time.time() - started, 1),
    }


def save_phase(
    recipe: Recipe, run: RunContext, data: PreparedData, trained: TrainedModel, evaluation: HeldOutEvaluation,
    results: dict[str, Any],
) -> str | None:  # fmt: skip
    """Save the model (or its candidate, when the gate fails); the gate's one-line error, or None."""
    script, args = recipe.script, recipe.training
    push_to = args.hub_model_id if args.push_to_hub else None
    destination = choose_destination(run.output_dir, evaluation.report, script.min_accuracy, script.force_push, push_to)
    # Pushed with the model: local paths of the user's data and base model appear as their names only.
    local = (script.dataset_path, script.test_path, recipe.model.model_name_or_path)
    data_report = without_local_paths({**data.report.as_dict(), "train_tokenization": trained.train_set.stats()}, local)
    # What the model was trained on, so an evaluation can tell held-out pairs from training ones.
    train_prompts = data.dataset["train"].with_format("arrow")["prompt"]
    data_report["train_prompts"] = train_prompts_record(train_prompts, salt=data.report.fingerprint)
    values = {**vars(script), **args.to_dict(), "model_name_or_path": recipe.model.model_name_or_path}
    card = CardInfo(
        base_model=recipe.model.model_name_or_path,
        recipe=without_local_paths({key: values[key] for key in RECIPE_KEYS_IN_CARD if key in values}, local),
        max_length=args.max_length,
        truncation_side=script.truncation_side,
        hub_model_id=push_to,
    )
    target = destination.target
    save_model_dir(target, trained.model, trained.tokenizer, evaluation, results, data_report, card, run.checkpoint_dir)
    shutil.rmtree(run.checkpoint_dir, ignore_errors=True)  # the model is saved whole: checkpoints have done their job
    print((target / "evaluation" / "report.md").read_text())
    print(json.dumps({k: results[k] for k in ("pairwise_accuracy", "ci95", "num_pairs", "num_ties")}))
    print(f"saved reward model to {target}")
    return destination.gate_failure


def push_phase(recipe: Recipe, run: RunContext, data: PreparedData) -> None:
    args = recipe.training
    if data.dataset_repo:
        url = push_dataset(data.dataset, data.dataset_repo, private=args.hub_private_repo, token=args.hub_token)
        print(f"pushed the dataset to {url}")
    if args.push_to_hub:
        url = push_folder(run.output_dir, args.hub_model_id, private=args.hub_private_repo, token=args.hub_token)
        print(f"pushed to {url}")


@cli_entry(interrupted=INTERRUPTED_RESUMABLE)  # checkpoints are kept: a rerun resumes
def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.time()
    recipe = parse_recipe(argv)
    use_all_cpu_cores()
    if recipe.training.process_index != 0:
        return run_phases(recipe, started)
    # One run at a time towards an output_dir: a second one would replace the first one's model unasked.
    with exclusive_output(Path(recipe.training.output_dir).resolve(), "output_dir"):
        return run_phases(recipe, started)


def run_phases(recipe: Recipe, started: float) -> dict[str, Any]:
    run = plan_run(recipe)
    data = prepare_data(recipe, run)
    baseline = baseline_phase(recipe, run, data)
    trained = train_model(recipe, run, data)
    if trained is None:
        # The main process evaluates and saves alone. No barrier after it: a long evaluation would outlast the
        # others' collective timeout (ddp_timeout) and get the main process killed in the middle of saving.
        leave_process_group()
        return {}
    trained_at = time.time()
    evaluation = evaluate_phase(recipe, data, trained, baseline)
    results = results_of(data, trained, evaluation, started)
    results["evaluation_runtime_s"] = round(time.time() - trained_at, 1)
    gate_failure = save_phase(recipe, run, data, trained, evaluation, results)
    after = time.time() - trained_at
    share = f" ({after / trained.train_runtime_s:.0%} of training)" if trained.train_runtime_s else ""
    print(f"time: training {trained.train_runtime_s:.1f} s; after training {after:.1f} s{share}, of which "
          f"evaluation {results['evaluation_runtime_s']:.1f} s")  # fmt: skip
    if gate_failure:
        raise UserError(gate_failure)
    push_phase(recipe, run, data)
    return results
