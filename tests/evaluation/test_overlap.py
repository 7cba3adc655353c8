"""Evaluation knows which pairs come from the model's training prompts (its data_report.json lists them, hashed), says
so in a warning line and in every report file, and never calls such a run held-out; --heldout_only scores the rest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.data import build_dataset, save_dataset
from pipeline.evaluation.cli import main
from pipeline.evaluation.overlap import train_prompts_record, training_overlap

RANKED = "prompt,answer,rank\n" + "".join(
    f"why is the sky blue {i},because of light {i},1\nwhy is the sky blue {i},no,2\nwhy is the sky blue {i},fry it,3\n"
    for i in range(10)
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path, object]:
    """A ranked file, and a model "trained" on its train split: data_report.json as training writes it."""
    folder = tmp_path_factory.mktemp("overlap")
    data = folder / "ranked.csv"
    data.write_text(RANKED)
    dataset, report = build_dataset(data, 0.3, 7)
    model = folder / "model"
    shutil.copytree(tiny_model_dir, model)
    record = train_prompts_record(dataset["train"].with_format("arrow")["prompt"], salt=report.fingerprint)
    (model / "data_report.json").write_text(json.dumps({**report.as_dict(), "train_prompts": record}))
    return data, model, dataset


def evaluate(capsys: pytest.CaptureFixture, *argv: str) -> tuple[dict, str]:
    main(list(argv))
    captured = capsys.readouterr()
    return json.loads(captured.out[captured.out.index("{") : captured.out.rindex("}") + 1]), captured.err


def warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("warning:")]


def test_pairs_from_training_prompts_are_counted_and_never_called_held_out(trained, tmp_path, capsys) -> None:
    data, model, dataset = trained
    train_pairs, total = len(dataset["train"]), len(dataset["train"]) + len(dataset["test"])
    out = tmp_path / "eval"
    printed, err = evaluate(capsys, "--model", str(model), "--data", str(data), "--output", str(out))
    overlap = printed["training_overlap"]
    assert overlap["pairs_from_training_prompts"] == train_pairs and overlap["num_pairs"] == total == 30
    assert overlap["prompts_from_training"] == 7 and overlap["held_out"] is False
    assert warnings(err) == [
        f"warning: {train_pairs} of {total} pairs (7 of 10 prompts) come from prompts the model was trained on, so "
        "this is not a held-out evaluation; add --heldout_only to score only the others"
    ]
    report = (out / "report.md").read_text()
    assert report.startswith(f"# Evaluation ({train_pairs} of {total} pairs from training prompts: not held-out)\n")
    assert "Held-out" not in report and "held-out evaluation" not in report.lower().replace("not a held-out", "")
    assert json.loads((out / "summary.json").read_text())["training_overlap"] == overlap
    assert json.loads((out / "eval_results.json").read_text())["training_overlap"] == overlap
    per_pair = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert sum(p["from_training_prompt"] for p in per_pair) == train_pairs


def test_heldout_only_scores_exactly_the_test_split(trained, tmp_path, capsys) -> None:
    data, model, dataset = trained
    out = tmp_path / "eval"
    printed, err = evaluate(capsys, "--model", str(model), "--data", str(data), "--output", str(out), "--heldout_only")
    assert printed["num_pairs"] == len(dataset["test"]) and not warnings(err)
    assert printed["training_overlap"]["pairs_left_out"] == len(dataset["train"])
    assert printed["training_overlap"]["held_out"] is True
    title = (
        f"# Held-out evaluation ({len(dataset['test'])} pairs; {len(dataset['train'])} from training prompts left out)"
    )
    assert (out / "report.md").read_text().startswith(title + "\n")


def test_the_saved_test_split_is_held_out(trained, tmp_path, capsys) -> None:
    data, model, _ = trained
    dataset, report = build_dataset(data, 0.3, 7)
    save_dataset(dataset, report, tmp_path / "pairs")
    printed, err = evaluate(capsys, "--model", str(model), "--data", str(tmp_path / "pairs"), "--output",
                            str(tmp_path / "eval"))  # fmt: skip
    assert printed["training_overlap"]["pairs_from_training_prompts"] == 0 and not warnings(err)
    assert (
        (tmp_path / "eval" / "report.md")
        .read_text()
        .startswith(f"# Held-out evaluation (none of the {len(dataset['test'])} pairs from training prompts)\n")
    )


def test_prompts_that_differ_in_case_or_whitespace_count_as_training_prompts(trained) -> None:
    import pandas as pd

    _, model, dataset = trained
    report = json.loads((model / "data_report.json").read_text())
    prompt = dataset["train"][0]["prompt"]
    variants = [prompt, f"  {prompt.upper()} ", prompt.replace(" ", "\t "), "a prompt never seen"]
    pairs = pd.DataFrame({"prompt": variants, "chosen": "a", "rejected": "b", "margin": 1.0})
    overlap = training_overlap(pairs, report)
    assert overlap.mask.tolist() == [True, True, True, False]
    assert (overlap.train_pairs, overlap.train_prompts, overlap.num_prompts) == (3, 1, 2)


def test_the_record_holds_no_prompt_text(trained) -> None:
    _, model, dataset = trained
    text = (model / "data_report.json").read_text()
    record = json.loads(text)["train_prompts"]
    assert record["count"] == 7 and "why is the sky" not in json.dumps(record)


@pytest.mark.parametrize(
    ("report", "note"),
    [
        (None, "there is no data_report.json in the model folder (a model trained elsewhere)"),
        ({"source": "x.csv"}, "does not list its training prompts (saved by an older version)"),
        ("same-file", "does not list its training prompts (saved by an older version); the data is the file it was "),
    ],
)
def test_unknown_overlap_is_said_and_not_called_held_out(trained, tmp_path, capsys, report, note) -> None:
    data, model, _ = trained
    bare = tmp_path / "model"
    shutil.copytree(model, bare)
    (bare / "data_report.json").unlink()
    if report == "same-file":  # an older model trained on this very file: its fingerprint matches
        report = {"fingerprint": json.loads((model / "data_report.json").read_text())["fingerprint"]}
    if report is not None:
        (bare / "data_report.json").write_text(json.dumps(report))
    printed, err = evaluate(capsys, "--model", str(bare), "--data", str(data), "--output", str(tmp_path / "eval"))
    assert printed["training_overlap"]["known"] is False
    assert len(warnings(err)) == 1 and note in warnings(err)[0]
    assert warnings(err)[0].startswith("warning: overlap with the model's training data is unknown: ")
    md = (tmp_path / "eval" / "report.md").read_text()
    assert md.startswith("# Evaluation (overlap with the training data unknown)\n") and note in md
