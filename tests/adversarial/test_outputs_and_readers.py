"""Hostile, quirky and plain unlucky inputs to `python -m pipeline.score` and the output checks: every one ends in
exit 0 with every value kept, or exit 2 with one `error:` line, no traceback, and no output written or changed.

Error cases run with a model loader that fails the test if called: they are all caught before the model is loaded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import REPO

from pipeline.core import files
from pipeline.core.errors import UserError
from pipeline.publishing.model_dir import check_output_dir
from pipeline.score import cli as score_cli

ROWS = [("How do I boil an egg?", "Nine minutes."), ("How do I boil an egg?", "Fry it."), ("why", "light / sky")]
CHAT = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
BAD_CHAT = [{"role": "robot", "content": "hello"}]
NO_CONTENT = [{"role": "assistant", "content": None}]


def run_score(capsys, *args: str) -> tuple[int, list[str]]:
    """`python -m pipeline.score ARGS` in-process: the exit code and the lines on stderr."""
    try:
        score_cli.main([*args, "--no_progress"])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err.strip().splitlines()


def assert_one_error(code: int, err: list[str], pattern: str) -> None:
    assert code == 2, err
    assert len(err) == 1 and not any("Traceback" in line for line in err), err
    assert re.fullmatch(f"error: {pattern}", err[0]), err[0]


def listing(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


@pytest.fixture
def work(tmp_path: Path) -> Path:
    pd.DataFrame(ROWS, columns=["prompt", "response"]).to_csv(tmp_path / "in.csv", index=False)
    (tmp_path / "file.txt").write_text("notes")
    (tmp_path / "outdir").mkdir()
    return tmp_path


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    def loaded(*args, **kwargs):
        raise AssertionError("the model was loaded before the error was found")

    monkeypatch.setattr(score_cli.RewardScorer, "from_pretrained", loaded)


def write_parquet(path: Path, frame: pd.DataFrame, views: tuple[str, ...] = ()) -> Path:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for name in views:
        table = table.set_column(table.column_names.index(name), name, table.column(name).cast(pa.string_view()))
    pq.write_table(table, path)
    return path


# -- everything a user types, and every input that cannot be scored, is refused before the model loads ------------

Setup = Callable[[Path], list[str]]


def _symlink_to_input(work: Path) -> list[str]:
    (work / "link.csv").symlink_to(work / "in.csv")
    return ["--output", str(work / "link.csv")]


def _input(work: Path, name: str, content: bytes | pd.DataFrame) -> list[str]:
    path = work / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        write_parquet(path, content)
    return ["--input", str(path)]


REFUSED: dict[str, tuple[Setup, str]] = {
    "output is a directory": (
        lambda w: ["--output", str(w / "outdir")],
        r"--output .*/outdir is a directory; give the path of a file to write \(new or existing\)",
    ),
    "output under a file": (
        lambda w: ["--output", str(w / "file.txt" / "scored.csv")],
        r"--output .*/file\.txt/scored\.csv: .*/file\.txt is a file, not a folder; choose another path",
    ),
    "output deep under a file": (
        lambda w: ["--output", str(w / "file.txt" / "a" / "scored.csv")],
        r"--output .*/file\.txt/a/scored\.csv: .*/file\.txt is a file, not a folder; choose another path",
    ),
    "output is the input": (
        lambda w: ["--output", str(w / "in.csv")],
        r"--output .*/in\.csv is the input file .*/in\.csv; refusing to overwrite it, choose another name",
    ),
    "output is the input by another path": (
        lambda w: ["--output", str(w / "outdir" / ".." / "in.csv")],
        r"--output .*/in\.csv is the input file .*; refusing to overwrite it, choose another name",
    ),
    "output is a symlink to the input": (
        _symlink_to_input,
        r"--output .*/link\.csv is the input file .*/in\.csv; refusing to overwrite it, choose another name",
    ),
    "output is a device": (
        lambda w: ["--output", "/dev/null"],
        r"--output /dev/null exists and is not a regular file; choose another name",
    ),
    "output suffix unknown": (
        lambda w: ["--output", str(w / "scored.xlsx")],
        r"--output .*/scored\.xlsx: unknown format '\.xlsx'; use \.csv, \.tsv or \.jsonl",
    ),
    "output without a suffix": (
        lambda w: ["--output", str(w / "scored")],
        r"--output .*/scored: unknown format ''; use \.csv, \.tsv or \.jsonl",
    ),
    "batch_size 0": (lambda w: ["--batch_size", "0"], r"--batch_size must be at least 1 \(got 0\); leave it .*"),
    "max_tokens 0": (lambda w: ["--max_tokens", "0"], r"--max_tokens must be at least 1 \(got 0\); leave it .*"),
    "num_threads 0": (lambda w: ["--num_threads", "0"], r"--num_threads must be at least 1 \(got 0\); leave it .*"),
    "num_threads negative": (
        lambda w: ["--num_threads", "-4"],
        r"--num_threads must be at least 1 \(got -4\); leave it out for the default",
    ),
    "max_length 0": (lambda w: ["--max_length", "0"], r"--max_length must be at least 8 \(got 0\); leave it .*"),
    "max_length too short for a pair": (
        lambda w: ["--max_length", "2"],
        r"--max_length must be at least 8 \(got 2\); leave it out for the default",
    ),
    "max_length above the model's positions": (
        lambda w: ["--max_length", "513"],
        r"--max_length 513 is above what the model .* can read \(512 tokens\); use at most 512",
    ),
    "max_length not an integer": (
        lambda w: ["--max_length", "1.5"],
        r"argument --max_length: invalid int value: '1\.5' \(see python -m pipeline\.score --help\)",
    ),
    "abbreviated flag": (
        lambda w: ["--batch", "4"],
        r"unrecognized arguments: --batch 4 \(see python -m pipeline\.score --help\)",
    ),
    "unknown precision": (
        lambda w: ["--precision", "fp64"],
        r"argument --precision: invalid choice: 'fp64' \(choose from .*\) \(see python -m pipeline\.score --help\)",
    ),
    "empty score column": (lambda w: ["--score_column", ""], r"--score_column must not be empty"),
    "score column already there": (
        lambda w: ["--score_column", "response"],
        r".*/in\.csv: already has a column 'response'; choose another name with --score_column",
    ),
    "prompt column twice": (
        lambda w: _input(w, "twice.csv", b"prompt,response,prompt\np,r,q\n"),
        r".*/twice\.csv: column 'prompt' appears 2 times in the header; rename all but one of them",
    ),
    "repeated column into a jsonl output": (
        lambda w: [*_input(w, "note.csv", b"prompt,note,response,note\np,a,r,b\n"), "--output", str(w / "o.jsonl")],
        r".*/note\.csv: column 'note' appears twice in the header, and a JSON object cannot hold both; rename .*",
    ),
    "json key twice in one object": (
        lambda w: _input(w, "twice.jsonl", b'{"prompt": "p", "response": "a", "response": "b"}\n'),
        r".*/twice\.jsonl: line 1: key 'response' appears twice in one object; rename one of them",
    ),
    "a message with an unknown role in jsonl": (
        lambda w: _input(w, "chat.jsonl", json.dumps({"prompt": "p", "response": BAD_CHAT}).encode() + b"\n"),
        r".*/chat\.jsonl: line 1: column 'response': message 1 has role 'robot'; roles are 'system', 'user', "
        r"'assistant'",
    ),
    "a message without content in parquet": (
        lambda w: _input(w, "chat.parquet", pd.DataFrame({"prompt": ["p", "q"], "response": [NO_CONTENT] * 2})),
        r".*/chat\.parquet: row 1: column 'response': message 1 has missing content; content must be text",
    ),
    "a list that is not messages": (
        lambda w: _input(w, "list.jsonl", json.dumps({"prompt": "p", "response": [1, 2]}).encode() + b"\n"),
        r".*/list\.jsonl: line 1: column 'response' holds a list or object, not text \(nor a list of "
        r"\{'role', 'content'\} messages\); give plain text or messages",
    ),
    "input is a directory": (
        lambda w: ["--input", str(w / "outdir")],
        r".*/outdir: is a directory; give a CSV, TSV, JSONL, JSON or Parquet file",
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_before_the_model_loads_with_one_line_and_nothing_written(
    case: str, work: Path, tiny_model_dir: Path, no_model, capsys
) -> None:
    setup, pattern = REFUSED[case]
    args = {"--input": str(work / "in.csv"), "--output": str(work / "scored.csv")}
    extra = setup(work)
    for flag in ("--input", "--output"):
        if flag in extra:
            index = extra.index(flag)
            args[flag] = extra.pop(index + 1)
            extra.pop(index)
    before = listing(work)
    code, err = run_score(capsys, "--model", str(tiny_model_dir), *(x for kv in args.items() for x in kv), *extra)
    assert_one_error(code, err, pattern)
    assert listing(work) == before  # nothing written, nothing changed, no staging file left


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes whatever the modes say")
@pytest.mark.parametrize("what", ["input", "output folder"])
def test_permission_denied_is_one_line_naming_the_path(
    what: str, work: Path, tiny_model_dir: Path, no_model, capsys
) -> None:
    locked = work / ("in.csv" if what == "input" else "outdir")
    locked.chmod(0o000 if what == "input" else 0o500)
    try:
        code, err = run_score(capsys, "--model", str(tiny_model_dir), "--input", str(work / "in.csv"), "--output",
                              str(work / "outdir" / "scored.csv"))  # fmt: skip
    finally:
        locked.chmod(0o700)
    pattern = {
        "input": r".*/in\.csv: cannot read the file \(Permission denied\); check its permissions",
        "output folder": r"--output .*/scored\.csv: cannot write in .*/outdir \(permission denied\); choose .*",
    }[what]
    assert_one_error(code, err, pattern)
    assert not (work / "outdir" / "scored.csv").exists()


# -- every value comes back as it went in --------------------------------------------------------------------------


def scored_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_jsonl_values_come_back_exactly(work: Path, tiny_model_dir: Path, capsys) -> None:
    records = [
        {"id": 1234567890123456789, "prompt": "p", "response": "a/b", "x": 0.1234567890123456789, "tags": ["t"]},
        {"id": None, "prompt": "p", "response": "é 🚀", "x": 1e-300, "meta": {"k": [1, None]}},
        {"id": 1234567890123456788, "prompt": "q", "response": "", "x": -0.0, "flag": True},
        {"id": 2**70, "prompt": "q", "response": 12, "x": 3},
    ]
    source = work / "in.jsonl"
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    target = work / "out.jsonl"
    code, err = run_score(capsys, "--model", str(tiny_model_dir), "--input", str(source), "--output", str(target))
    assert code == 0, err
    written = scored_records(target)
    keys = ["id", "prompt", "response", "x", "tags", "meta", "flag"]
    assert [{k: w[k] for k in keys} for w in written] == [{k: r.get(k) for k in keys} for r in records]
    assert [type(w["id"]) for w in written] == [int, type(None), int, int]  # ids never become floats
    assert len({w["id"] for w in written}) == 4
    assert "a/b" in target.read_text() and "🚀" in target.read_text()  # no escaping of "/" or non-ASCII


def test_a_repeated_header_name_keeps_both_columns_in_a_csv_output(work: Path, tiny_model_dir: Path, capsys) -> None:
    source = work / "twice.csv"
    source.write_text("id,prompt,note,response,note\n007,p,first,r,second\n008,q,,s,NA\n")
    target = work / "scored.tsv"
    code, err = run_score(capsys, "--model", str(tiny_model_dir), "--input", str(source), "--output", str(target))
    assert code == 0, err
    lines = [line.split("\t") for line in target.read_text().splitlines()]
    assert lines[0] == ["id", "prompt", "note", "response", "note", "score"]
    assert [line[:5] for line in lines[1:]] == [["007", "p", "first", "r", "second"], ["008", "q", "", "s", "NA"]]


def test_jsonl_values_in_a_csv_output_are_written_as_json(work: Path, tiny_model_dir: Path, capsys) -> None:
    source = work / "in.jsonl"
    source.write_text('{"id": 12345678901234567890, "prompt": "p", "response": "r", "tags": ["a", "b"], "ok": false}\n'
                      '{"id": null, "prompt": "p", "response": "s", "x": 0.1}\n')  # fmt: skip
    target = work / "scored.csv"
    code, err = run_score(capsys, "--model", str(tiny_model_dir), "--input", str(source), "--output", str(target))
    assert code == 0, err
    out = pd.read_csv(target, dtype=str, keep_default_na=False)
    assert out["id"].tolist() == ["12345678901234567890", ""] and out["tags"].tolist() == ['["a", "b"]', ""]
    assert out["ok"].tolist() == ["false", ""] and out["x"].tolist() == ["", "0.1"]


def test_parquet_categories_views_and_nullable_integers_are_kept(work: Path, tiny_model_dir: Path, capsys) -> None:
    frame = pd.DataFrame({"prompt": pd.Categorical(["p", "p", "q"]), "response": ["a", "b", "c"],
                          "id": pd.array([2**62, None, 7], dtype="Int64"),
                          "kind": pd.Categorical(["x", "y", "x"])})  # fmt: skip
    source = write_parquet(work / "in.parquet", frame, views=("response",))
    target = work / "out.jsonl"
    code, err = run_score(capsys, "--model", str(tiny_model_dir), "--input", str(source), "--output", str(target),
                          "--rank")  # fmt: skip
    assert code == 0, err
    written = scored_records(target)
    assert [(w["prompt"], w["response"], w["id"], w["kind"]) for w in written] == [
        ("p", "a", 2**62, "x"), ("p", "b", None, "y"), ("q", "c", 7, "x")
    ]  # fmt: skip
    assert sorted(w["score_rank"] for w in written[:2]) == [1, 2] and written[2]["score_rank"] == 1


def test_a_field_longer_than_a_read_block_is_kept_whole(work: Path, tiny_model_dir: Path, capsys) -> None:
    from pipeline.data import delimited

    huge = "x" * (delimited._CSV_BLOCK + 3)
    source = work / "big.csv"
    source.write_text(f'prompt,response,attachment\np,r,"{huge}"\nq,s,small\n')
    target = work / "scored.csv"
    code, err = run_score(capsys, "--model", str(tiny_model_dir), "--input", str(source), "--output", str(target))
    assert code == 0, err
    rows = target.read_text().splitlines()
    assert rows[1].startswith(f"p,r,{huge},") and rows[2].startswith("q,s,small,")


# -- the output is never written through a planted link, and the umask is never touched ---------------------------


def test_planted_symlinks_are_never_followed_and_the_umask_is_never_changed(
    work: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def no_umask(mask: int) -> int:
        raise AssertionError("os.umask was called: it changes the mode of files other threads create")

    monkeypatch.setattr(os, "umask", no_umask)
    victim = work / "victim.txt"
    victim.write_text("precious")
    names = iter(["aaaaaaaa"] * 3 + ["bbbbbbbb"] * 100)
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(names))
    planted = work / f".scored.csv.tmp-{os.getpid()}-aaaaaaaa"  # the name an attacker predicted
    planted.symlink_to(victim)
    target = work / "scored.csv"
    target.symlink_to(victim)  # the output itself a link: replaced, never written through
    code, err = run_score(capsys, "--model", str(tiny_model_dir), "--input", str(work / "in.csv"), "--output",
                          str(target))  # fmt: skip
    assert code == 0, err
    assert victim.read_text() == "precious" and planted.is_symlink()
    assert not target.is_symlink() and target.read_text().startswith("prompt,response,score\n")
    assert not [p for p in work.iterdir() if ".tmp-" in p.name and p != planted]


# -- folders replaced whole keep the user's files -----------------------------------------------------------------


def test_a_model_folder_with_a_file_of_the_users_is_refused_even_with_overwrite(tiny_model_dir: Path, tmp_path: Path):
    model = tmp_path / "reward_model"
    shutil.copytree(tiny_model_dir, model)  # every file save_pretrained writes for a model and its tokenizer
    for name in ("eval_results.json", "data_report.json", "README.md", ".gitignore"):
        (model / name).write_text("{}")
    (model / "evaluation").mkdir()
    check_output_dir(model, overwrite=True)  # an earlier output of ours: replaced when asked
    with pytest.raises(UserError, match="already holds a trained model; to replace it set overwrite_output_dir"):
        check_output_dir(model, overwrite=False)
    (model / "my_notes.md").write_text("a week of notes")
    with pytest.raises(UserError, match=r"already holds files this program did not write \(my_notes\.md\)"):
        check_output_dir(model, overwrite=True)
    assert (model / "my_notes.md").read_text() == "a week of notes"


@pytest.mark.parametrize("extra", [None, "notes.txt", "train.csv"])
def test_the_data_step_never_deletes_a_file_beside_its_earlier_output(
    extra: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from pipeline.data.cli import main as data_main

    monkeypatch.chdir(REPO)
    out = tmp_path / "processed"
    argv = ["--config", "recipes/quickstart.yaml", "--output_dir", str(out)]
    data_main(list(argv))
    if extra is not None:
        (out / Path(extra).name).write_text("mine")
    capsys.readouterr()
    before = listing(out)
    try:
        data_main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    err = capsys.readouterr().err.strip().splitlines()
    if extra is None:
        assert code == 0, err  # only our own files: replaced
        return
    name = Path(extra).name
    assert_one_error(code, err, rf"--output_dir {re.escape(str(out))} already holds files this program did not "
                     rf"write \({name}\); it is replaced as a whole when saving, .*")  # fmt: skip
    assert listing(out) == before


def test_the_data_step_output_under_a_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    from pipeline.data.cli import main as data_main

    monkeypatch.chdir(REPO)
    (tmp_path / "file.txt").write_text("notes")
    with pytest.raises(SystemExit) as exit_:
        data_main(["--config", "recipes/quickstart.yaml", "--output_dir", str(tmp_path / "file.txt" / "processed")])
    err = capsys.readouterr().err.strip().splitlines()
    assert_one_error(exit_.value.code, err, r"--output_dir .*/file\.txt/processed: .*/file\.txt is a file, not a .*")
    assert (tmp_path / "file.txt").read_text() == "notes"
