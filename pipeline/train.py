"""One command: ranked file -> pairs -> TRL RewardTrainer -> exact held-out accuracy -> saved (and pushed) model.

accelerate launch pipeline/train.py --config recipes/quickstart.yaml [--any_field value ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # `accelerate launch pipeline/train.py` puts pipeline/ (not the repo) first on sys.path.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    set_seed,
)

from pipeline.core.errors import UserError, cli_entry  # noqa: E402
from pipeline.core.files import atomic_dir, check_replaceable  # noqa: E402
from pipeline.core.hub import push_folder  # noqa: E402
from pipeline.data import build_dataset, data_options, dataset_hub_target, push_dataset  # noqa: E402
from pipeline.evaluation.accuracy import build_report, evaluate_pairs, score_ids  # noqa: E402
from pipeline.evaluation.report import write_report  # noqa: E402
from pipeline.model.base import resolve_base_model  # noqa: E402
from pipeline.model.encoding import EncodedPairs, encode_preference_pairs  # noqa: E402
from pipeline.publishing.model_card import write_model_card  # noqa: E402
from pipeline.recipe.config import PipelineRewardConfig, ScriptArguments, parse_recipe  # noqa: E402
from pipeline.training.checkpoints import (  # noqa: E402
    checkpoint_dir_for,
    dataset_fingerprint,
    resume_point,
    run_identity,
    write_run_file,
)
from pipeline.training.distributed import build_data_once, decided_by_main, full_model  # noqa: E402
from pipeline.training import (  # noqa: E402
    GroupCollator,
    PairwiseRewardTrainer,
    RankingRewardTrainer,
    pairwise_dataset,
    ranking_dataset,
)

# A directory holding these was written by this program (and may be replaced with overwrite_output_dir).
OWN_MODEL_FILES = ("config.json", "eval_results.json")
RECIPE_KEYS_IN_CARD = (
    "model_name_or_path", "dataset_path", "test_path", "input_shape", "objective", "train_sampling_strategy",
    "test_size", "split_seed", "use_margin", "truncation_side", "max_length",
    "num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "warmup_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "weight_decay", "bf16", "seed",
)  # fmt: skip


def training_set(
    tokenizer: PreTrainedTokenizerBase, split: Dataset, max_length: int, objective: str, use_margin: bool
) -> tuple[Dataset, EncodedPairs, dict[str, int]]:
    """Token ids for the trainer, encoded with the Quick Start call (never TRL's text path)."""
    pairs = split.to_pandas()
    encoded = encode_preference_pairs(tokenizer, pairs, max_length)
    if objective == "ranking":
        dataset = ranking_dataset(pairs, encoded)
        sequences = sum(len(x) for x in dataset["answer_ids"])
    else:
        dataset = pairwise_dataset(encoded, pairs["margin"].to_numpy() if use_margin else None)
        sequences = 2 * len(pairs)
    stats = {
        "truncated_pairs": int(encoded.truncated_pairs.sum()),
        "answer_truncated_pairs": int(encoded.answer_truncated_pairs.sum()),
        "sequences_per_epoch": int(sequences),
    }
    return dataset, encoded, stats


def reward_statistics(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoded: EncodedPairs, limit: int, batch_size: int
) -> dict[str, float | int]:
    """Mean and std of the trained model's scores over the training answers, so users can standardise scores."""
    ids = encoded.texts.input_ids
    index = np.arange(len(ids))
    if len(index) > limit:
        index = np.sort(np.random.default_rng(0).choice(index, size=limit, replace=False))
    scores = score_ids(model, tokenizer, [ids[i] for i in index], batch_size, progress=True, desc="reward statistics")
    return {"reward_mean": float(scores.mean()), "reward_std": float(scores.std()), "reward_stats_answers": len(index)}


def quality_gate(report: dict[str, Any], min_accuracy: float) -> str | None:
    """Why this model should not be pushed or replace another one, or None when it passes."""
    accuracy = report["model"]["pairwise_accuracy"]
    best = report["best_trivial_baseline"]
    if accuracy < min_accuracy:
        return f"held-out accuracy {accuracy:.4f} is below min_accuracy {min_accuracy:.4f}"
    if accuracy <= best["pairwise_accuracy"]:
        return (
            f"held-out accuracy {accuracy:.4f} is not above the best trivial baseline "
            f"({best['name']}: {best['pairwise_accuracy']:.4f})"
        )
    return None


def check_output_dir(output_dir: Path, overwrite: bool, inputs: tuple[str | None, ...] = ()) -> None:
    """Fail before training, not after, when the model could not be saved or would replace something unasked."""
    parent = output_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".write-test-"):
            pass
    except OSError as err:
        raise UserError(f"output_dir {output_dir}: cannot write there ({err.strerror})") from err
    if check_replaceable(output_dir, OWN_MODEL_FILES, "output_dir", inputs) and not overwrite:
        raise UserError(
            f"output_dir {output_dir} already holds a trained model; to replace it set overwrite_output_dir: true "
            "in the recipe (or pass --overwrite_output_dir true), or choose another output_dir"
        )
    # Where a model that fails the quality gate goes instead: also replaced as a whole.
    check_replaceable(candidate_dir(output_dir), OWN_MODEL_FILES, "output_dir's candidate folder", inputs)


def candidate_dir(output_dir: Path) -> Path:
    return output_dir.with_name(f"{output_dir.name}-candidate")


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


def recipe_summary(script_args: ScriptArguments, training_args: PipelineRewardConfig, model_name: str) -> dict:
    values = {**vars(script_args), **training_args.to_dict(), "model_name_or_path": model_name}
    return {key: values[key] for key in RECIPE_KEYS_IN_CARD if key in values}


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


@cli_entry
def main(argv: list[str] | None = None) -> dict[str, Any]:
    started = time.time()
    script_args, training_args, model_args = parse_recipe(argv)
    use_all_cpu_cores()
    # Absolute, no symlinks: "." or "out/" or a link must name the folder that is replaced, not its entry.
    output_dir = Path(training_args.output_dir).resolve()
    is_main, world_size = training_args.process_index == 0, training_args.world_size
    inputs = (script_args.dataset_path, script_args.test_path)
    decided_by_main(
        lambda: check_output_dir(output_dir, training_args.overwrite_output_dir, inputs), is_main, world_size
    )
    base_model = resolve_base_model(model_args.model_name_or_path)
    checkpoint_dir = checkpoint_dir_for(output_dir)

    options = data_options(script_args)  # column mapping, input shape, separate test file
    dataset_repo = dataset_hub_target(script_args)  # None unless dataset_push_to_hub
    dataset, report = build_data_once(
        lambda: build_dataset(
            script_args.dataset_path,
            script_args.test_size,
            script_args.split_seed,
            script_args.drop_empty_answers,
            **options,
        ),
        checkpoint_dir / "data",
        is_main,
        world_size,
    )
    # Passed at load time so save_pretrained stores them: the Quick Start call then cuts long pairs as training did.
    tokenizer = AutoTokenizer.from_pretrained(
        base_model, truncation_side=script_args.truncation_side, model_max_length=training_args.max_length
    )
    train_set, train_encoded, train_stats = training_set(
        tokenizer, dataset["train"], training_args.max_length, script_args.objective, script_args.use_margin
    )
    if is_main:
        print(report.summary())
        print(
            f"  train pairs truncated to {training_args.max_length} tokens: {train_stats['truncated_pairs']} "
            f"(answer cut in {train_stats['answer_truncated_pairs']})"
        )
        unit = "prompts" if script_args.objective == "ranking" else "pairs"
        per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
        global_batch = per_step * world_size
        engine = PartialState().distributed_type.value  # NO, MULTI_CPU, MULTI_GPU, ...
        for name in ("FSDP", "DEEPSPEED"):  # the Accelerator sets these later; PartialState may still say MULTI_GPU
            if os.environ.get(f"ACCELERATE_USE_{name}", "").lower() == "true":
                if engine == "MULTI_CPU":  # Accelerate quietly falls back to DDP without GPUs
                    print(f"warning: the Accelerate config asks for {name}, which needs GPUs; running DDP on CPU")
                else:
                    engine = name
        print(
            f"training: world size {world_size} ({engine}) on {training_args.device.type}, "
            f"global batch {global_batch} {unit}"
        )

    set_seed(training_args.seed)  # the new reward head is random: seed it so runs repeat exactly
    model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1)
    decided_by_main(lambda: check_disk_space(output_dir, model, training_args), is_main, world_size)
    identity = run_identity(
        {**vars(script_args), **training_args.to_dict(), **vars(model_args)}, dataset_fingerprint(dataset)
    )
    explicit = training_args.resume_from_checkpoint
    resume_from = decided_by_main(lambda: resume_point(checkpoint_dir, identity, explicit), is_main, world_size)
    push = training_args.push_to_hub
    training_args.push_to_hub = False  # we push ourselves, after the local copy is complete
    # Checkpoints live beside the model, not inside it: the model dir is replaced whole.
    training_args.output_dir = str(checkpoint_dir)
    if script_args.objective == "ranking":
        trainer = RankingRewardTrainer(
            model=model,
            args=training_args,
            train_dataset=train_set,
            processing_class=tokenizer,
            data_collator=GroupCollator(tokenizer.pad_token_id),
            use_margin=script_args.use_margin,
        )
    else:
        trainer = PairwiseRewardTrainer(
            model=model, args=training_args, train_dataset=train_set, processing_class=tokenizer
        )
    if is_main:
        write_run_file(checkpoint_dir, identity)
        if resume_from:
            print(f"resuming from {resume_from} (a previous run of this recipe stopped there)")
    train_result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    training_args.output_dir = str(output_dir)
    trained = full_model(trainer, is_main)  # a collective under FSDP/DeepSpeed: every process joins
    if not is_main:
        # The main process evaluates and saves alone. No barrier after it: a long evaluation would outlast the
        # others' collective timeout (ddp_timeout) and get the main process killed in the middle of saving.
        return {}

    gate_failure: str | None = None
    report_dict = report.as_dict()
    report_dict["train_tokenization"] = train_stats
    test_pairs = dataset["test"].to_pandas()
    evaluate_args = (tokenizer, test_pairs, training_args.max_length, script_args.eval_batch_size)
    held_out = evaluate_pairs(trained, *evaluate_args, progress=True, desc="held-out pairs")
    set_seed(training_args.seed)  # the same random head as before training
    untrained_model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1)
    untrained = evaluate_pairs(
        untrained_model.to(trained.device), *evaluate_args, progress=True, desc="untrained baseline"
    )
    del untrained_model
    evaluation = build_report(test_pairs, held_out, untrained, seed=training_args.seed)
    stats = reward_statistics(
        trained, tokenizer, train_encoded, script_args.reward_stats_max_answers, script_args.eval_batch_size
    )
    trained.config.update(stats)  # saved in config.json: (score - reward_mean) / reward_std standardises
    results = {
        **evaluation["model"],
        "best_trivial_baseline": evaluation["best_trivial_baseline"],
        "split": "test",
        "test_prompts": report.splits["test"]["prompts"],
        "train_pairs": report.splits["train"]["pairs"],
        **stats,
        "train_runtime_s": round(train_result.metrics.get("train_runtime", 0.0), 1),
        "total_runtime_s": round(time.time() - started, 1),
    }
    failure = quality_gate(evaluation, script_args.min_accuracy)
    replacing = (output_dir / "config.json").exists()
    target = output_dir
    if failure and (push or replacing):
        if script_args.force_push:
            print(f"warning: {failure}; continuing because force_push is set")
        else:
            target = candidate_dir(output_dir)
            action = f"not pushing to {training_args.hub_model_id}" if push else f"not replacing {output_dir}"
            gate_failure = (
                f"quality gate: {failure}; {action}. The new model is saved in {target}. "
                "To push or replace anyway, set force_push: true in the recipe (or pass --force_push true)"
            )
    elif failure:
        print(f"warning: {failure}")
    try:
        with atomic_dir(target) as staging:
            trained.save_pretrained(str(staging))
            tokenizer.save_pretrained(str(staging))
            (staging / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
            (staging / "data_report.json").write_text(json.dumps(report_dict, indent=2) + "\n")
            write_report(staging / "evaluation", test_pairs, held_out, evaluation)
            write_model_card(
                staging,
                base_model=model_args.model_name_or_path,
                metrics=results,
                evaluation=evaluation,
                data_report=report_dict,
                recipe=recipe_summary(script_args, training_args, model_args.model_name_or_path),
                max_length=training_args.max_length,
                truncation_side=script_args.truncation_side,
                hub_model_id=training_args.hub_model_id if push else None,
            )
    except OSError as err:  # disk full, quota, permissions changed mid-run: the previous model is untouched
        raise UserError(
            f"cannot save the model to {target}: {err.strerror or err}; nothing was replaced, and the run's "
            f"checkpoints are kept in {checkpoint_dir} (free space and rerun the same command to resume)"
        ) from err
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the model is saved whole: checkpoints have done their job
    print((target / "evaluation" / "report.md").read_text())
    print(json.dumps({k: results[k] for k in ("pairwise_accuracy", "ci95", "num_pairs", "num_ties")}))
    print(f"saved reward model to {target}")
    if gate_failure:
        raise UserError(gate_failure)
    if dataset_repo:
        url = push_dataset(dataset, dataset_repo, private=training_args.hub_private_repo)
        print(f"pushed the dataset to {url}")
    if push:
        url = push_folder(output_dir, training_args.hub_model_id, private=training_args.hub_private_repo)
        print(f"pushed to {url}")
    return results


if __name__ == "__main__":
    main()
