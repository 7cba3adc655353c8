"""Reading inputs: every file format, saved datasets and Hub ids, encodings, CSV quoting, file-level errors with the
row or line they concern, and `read_rows` (a file's rows, values as they are, for the scoring CLI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import write_csv

from pipeline.core.errors import UserError
from pipeline.data import build_dataset, read_pairs, read_rows, save_dataset

# --- formats and sources -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_every_file_format_gives_the_same_pairs_split_and_counts(
    tmp_path: Path, suffix: str, ranked_frame, write_format, pair_set
) -> None:
    reference, ref_report = build_dataset(write_format(ranked_frame(), tmp_path / "ref.csv"), 0.2, 3)
    dataset, report = build_dataset(write_format(ranked_frame(), tmp_path / f"in{suffix}"), 0.2, 3)
    assert pair_set(dataset) == pair_set(reference) and len(pair_set(dataset)) == 30
    assert set(dataset["test"]["prompt"]) == set(reference["test"]["prompt"])
    assert report.splits == ref_report.splits
    assert report.input_format == suffix.lstrip(".") and report.shape == "ranked"


def test_save_to_disk_dataset_directory_is_an_input(tmp_path: Path, ranked_frame) -> None:
    from datasets import Dataset

    Dataset.from_pandas(ranked_frame()).save_to_disk(str(tmp_path / "rows"))
    dataset, report = build_dataset(tmp_path / "rows", 0.2, 3)
    assert report.input_format == "save_to_disk" and report.pairs == 30
    assert report.fingerprint.startswith("sha256:")
    assert "by prompt" in report.split_method


def test_save_to_disk_datasetdict_with_train_and_test_is_used_as_the_split(tmp_path: Path, ranked_frame) -> None:
    from datasets import Dataset, DatasetDict

    frame = ranked_frame()
    DatasetDict(
        {
            "train": Dataset.from_pandas(frame[frame.prompt != "prompt 0"], preserve_index=False),
            "test": Dataset.from_pandas(frame[frame.prompt == "prompt 0"], preserve_index=False),
            "validation": Dataset.from_pandas(frame.head(3), preserve_index=False),
        }
    ).save_to_disk(str(tmp_path / "dd"))
    dataset, report = build_dataset(tmp_path / "dd", 0.5, 3)
    assert set(dataset["test"]["prompt"]) == {"prompt 0"} and dataset["test"].num_rows == 3
    assert dataset["train"].num_rows == 27
    assert report.test_file is not None and report.test_file.source.endswith("[test split]")
    assert any("validation" in note for note in report.notes)


def test_the_data_steps_own_output_directory_reads_back_as_pairwise_input(
    tmp_path: Path, ranked_frame, write_format, pair_set
) -> None:
    first, report = build_dataset(write_format(ranked_frame(), tmp_path / "in.csv"), 0.2, 3)
    save_dataset(first, report, tmp_path / "processed")
    again, again_report = build_dataset(tmp_path / "processed", 0.2, 3)
    assert again_report.shape == "pairwise" and again_report.margin.startswith("from column")
    assert pair_set(again) == pair_set(first)
    assert set(again["test"]["prompt"]) == set(first["test"]["prompt"])


def test_a_hub_dataset_id_goes_through_load_dataset(monkeypatch: pytest.MonkeyPatch, ranked_frame) -> None:
    import datasets

    seen = []

    def fake_load_dataset(name):
        seen.append(name)
        return datasets.DatasetDict({"train": datasets.Dataset.from_pandas(ranked_frame())})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset, report = build_dataset("someone/ranked-answers", 0.2, 3)
    assert seen == ["someone/ranked-answers"] and report.input_format == "hub" and report.pairs == 30


def test_a_hub_dataset_id_offline_is_a_one_line_error(fails) -> None:
    message = fails("someone/not-cached-anywhere", r"offline mode is on \(HF_HUB_OFFLINE=1\)")
    assert "no such file or directory here" in message


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing.csv", None, r"missing.csv: no such file"),
        ("sheet.xlsx", b"PK\x03\x04", r"\.xlsx files are not read; export the sheet as CSV"),
        ("utf16.csv", "prompt,answer,rank\np,a,1\n".encode("utf-16"), r"the file is UTF-16, not UTF-8"),
        ("broken.parquet", b"not parquet at all", r"not a readable Parquet file"),
    ],
)
def test_unreadable_inputs_are_one_line_errors(tmp_path: Path, name: str, content: bytes | None, match: str, fails):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    fails(path, match)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.tsv", b"", r"the file is empty; expected a header row"),
        ("blank.csv", b"\n \n\r\n", r"the file is empty"),
        ("empty.jsonl", b"\n\n", r"the file is empty; expected one JSON object per line"),
        ("first.csv", b"\nprompt,answer,rank\n", r"row 1 is empty; the first row must be the header"),
        ("bad.jsonl", b'{"prompt":"p","answer":"a","rank":1}\n\n{"prompt":', r"line 3 is not valid JSON"),
        ("array.json", b'[{"prompt":"p","answer":"a","rank":1}, 3]', r"record 2 is not a JSON object"),
    ],
)
def test_unparsable_files_are_errors_naming_file_line_and_reason(
    tmp_path: Path, name: str, content: bytes, match: str, write_bytes, fails
) -> None:
    path = write_bytes(tmp_path / name, content)
    message = fails(path, match)
    assert message.startswith(str(path))


# --- text as written: quirks, encodings, quoting, row numbers ------------------------------------------------------


def test_seed_file_quirks_float_ranks_multiline_and_empty_answers(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "quirks.csv",
        "prompt,answer,rank\n"
        'Tell a joke,"Line one\nline two with ""quotes"" 🚀",2.0\n'
        "Tell a joke,,1.0\n"
        "Tell a joke,Short one,1.0\n"
        "Say hi,Hello!,1\n"
        'Say hi,"",2\n'
        "Say hi,Hey,2\n",
    )
    pairs, report = read_pairs(path, input_shape="ranked")
    assert report.rows_read == 6
    assert report.dropped == {"empty_answer": 2}
    joke = pairs[pairs.prompt == "Tell a joke"]  # its answer ranked 2.0 is the rejected one, a rank gap of 1.0
    assert joke.rejected.iloc[0] == 'Line one\nline two with "quotes" 🚀' and joke.margin.iloc[0] == 1.0
    assert set(zip(pairs.chosen, pairs.rejected, strict=True)) == {
        ("Short one", 'Line one\nline two with "quotes" 🚀'),
        ("Hello!", "Hey"),
    }


def test_a_byte_order_mark_is_accepted_and_stripped(tmp_path: Path, write_bytes) -> None:
    path = write_bytes(tmp_path / "bom.csv", b"\xef\xbb\xbfprompt,answer,rank\np,a,1\np,b,2\nq,c,1\nq,d,2\n")
    dataset, report = build_dataset(path, 0.5, 1)
    assert report.columns["prompt"] == "prompt" and report.pairs == 2
    assert all(not p.startswith("\ufeff") for p in [*dataset["train"]["prompt"], *dataset["test"]["prompt"]])
    lines = [b'{"prompt":"%s","answer":"%s","rank":%d}' % (p, a, r) for p, a, r in [(b"p", b"a", 1), (b"p", b"b", 2)]]
    lines += [b'{"prompt":"q","answer":"c","rank":1}', b'{"prompt":"q","answer":"d","rank":2}']
    jsonl = write_bytes(tmp_path / "bom.jsonl", b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    assert build_dataset(jsonl, 0.5, 1)[1].pairs == 2


def test_mixed_number_and_text_ranks_in_jsonl_are_read(tmp_path: Path, write_bytes) -> None:
    content = b'{"prompt":"p","answer":"a","rank":1}\n{"prompt":"p","answer":"b","rank":"2"}\n'
    content += b'{"prompt":"q","answer":"a","rank":1.0}\n{"prompt":"q","answer":"b","rank":"2.0"}\n'
    assert build_dataset(write_bytes(tmp_path / "m.jsonl", content), 0.5, 1)[1].pairs == 2


def test_invalid_utf8_names_the_row_or_the_header_byte(tmp_path: Path, write_bytes, fails) -> None:
    body = b"p,a,1\np,b,2\n"
    message = fails(write_bytes(tmp_path / "row.csv", b"prompt,answer,rank\n" + body + b"q,\xe9t\xe9,1\nq,b,2\n"))
    assert "row 4: column 'answer' is not valid UTF-8; re-save the file as UTF-8" in message
    message = fails(write_bytes(tmp_path / "head.csv", b"prompt,r\xe9ponse,rank\n" + body))
    assert "row 1 (the header) is not valid UTF-8 at byte offset 8" in message
    message = fails(write_bytes(tmp_path / "row.jsonl", b'{"prompt":"p","answer":"\xff","rank":1}\n'))
    assert "line 1" in message and "not valid UTF-8" in message
    # Invalid bytes in a column that is not used are harmless.
    ok = write_bytes(tmp_path / "other.csv", b"prompt,answer,rank,note\np,a,1,\xff\np,b,2,x\n")
    pairs, report = read_pairs(ok, input_shape="ranked")
    assert report.rows_kept == 2 and len(pairs) == 1


@pytest.mark.parametrize(
    ("content", "match"),
    [
        # The quote is never closed and swallows the rest of the file: pyarrow alone would read this silently.
        (b'prompt,answer,rank\np,a,1\np,b,"2\nq,c,1\nq,d,2\n', r"row 3 \(line 3\): a quoted field opens here"),
        (b'prompt,answer,rank\np,a,1\np,"b,2\nq,c,1\n', r"row 3 \(line 3\): a quoted field opens here"),
        (b'"prompt,answer,rank\np,a,1\n', r"row 1 \(line 1\): a quoted field opens here"),
        # A multi-line answer before the problem: row and line differ.
        (b'prompt,answer,rank\np,"x\ny",1\np,"b,2\n', r"row 3 \(line 4\): a quoted field opens here"),
        (b"prompt,answer,rank\np,a,1\np,b,c,2\n", r"row 3 \(line 3\) has 4 fields but the header has 3"),
    ],
)
def test_unterminated_quotes_and_wrong_field_counts_name_the_row(
    tmp_path: Path, content: bytes, match: str, write_bytes, fails
) -> None:
    fails(write_bytes(tmp_path / "q.csv", content), match)


def test_quotes_inside_unquoted_fields_are_fine(tmp_path: Path, write_bytes, pair_set) -> None:
    content = b'prompt,answer,rank\np,a 5" screen,1\np,b,2\nq,"say ""hi""",1\nq,d,2\n'
    dataset, _ = build_dataset(write_bytes(tmp_path / "q.csv", content), 0.5, 1)
    assert ("p", 'a 5" screen', "b", 1.0) in pair_set(dataset) and ("q", 'say "hi"', "d", 1.0) in pair_set(dataset)


def test_row_numbers_count_blank_lines_as_a_spreadsheet_does(tmp_path: Path, write_bytes, fails) -> None:
    content = b"prompt,answer,rank\n\np,a,1\n\n\np,b,oops\n"
    fails(write_bytes(tmp_path / "b.csv", content), r"row 6: rank 'oops'")
    jsonl = b'{"prompt":"p","answer":"a","rank":1}\n\n  \n{"prompt":"p","answer":"b","rank":-2}\n'
    fails(write_bytes(tmp_path / "b.jsonl", jsonl), r"line 4: rank -2 is not a positive number")


# --- read_rows: rows to write back -------------------------------------------------------------------------------


def test_read_rows_keeps_csv_text_as_written_and_jsonl_values_as_they_are(tmp_path: Path, write_bytes) -> None:
    csv = write_bytes(tmp_path / "r.csv", b"\xef\xbb\xbfid,note,n\n01,,1.50\n02,NA,x\n")
    assert read_rows(csv).frame.to_dict("list") == {"id": ["01", "02"], "note": ["", "NA"], "n": ["1.50", "x"]}
    jsonl = write_bytes(tmp_path / "r.jsonl", b'{"id": 1, "tags": ["a"]}\n\n{"id": 2, "tags": [], "x": "y"}\n')
    rows = read_rows(jsonl)
    assert list(rows.frame.columns) == ["id", "tags", "x"]
    assert rows.frame["id"].tolist() == [1, 2] and rows.frame["tags"].tolist() == [["a"], []]
    assert rows.frame["x"].tolist() == [None, "y"] and rows.where(1) == "line 3"


def test_read_rows_keeps_integer_ids_with_a_null_exact(tmp_path: Path, write_bytes) -> None:
    ids = [1234567890123456789, None, 1234567890123456788, 2**70]
    content = b"".join(b'{"id": %s, "x": 0.1234567890123456789}\n' % (b"null" if i is None else b"%d" % i) for i in ids)
    frame = read_rows(write_bytes(tmp_path / "ids.jsonl", content)).frame
    assert frame["id"].tolist() == ids and frame["x"].tolist() == [0.1234567890123456789] * 4
    array = write_bytes(tmp_path / "ids.json", b"[" + b",".join(b'{"id": %d}' % i for i in ids[::2]) + b"]")
    assert read_rows(array).frame["id"].tolist() == ids[::2]


def test_read_rows_keeps_a_repeated_header_name_twice(tmp_path: Path, write_bytes) -> None:
    rows = read_rows(write_bytes(tmp_path / "d.csv", b"prompt,note,response,note\np,first,r,second\n"))
    assert list(rows.frame.columns) == ["prompt", "note", "response", "note"]
    assert rows.frame.iloc[0].tolist() == ["p", "first", "r", "second"]


def test_read_rows_parquet_keeps_types_and_nulls_and_decodes_categories(tmp_path: Path) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.DataFrame({"prompt": ["p", "q"], "response": ["a", None], "kind": pd.Categorical(["x", "y"]),
                          "id": pd.array([2**62, None], dtype="Int64")})  # fmt: skip
    table = pa.Table.from_pandas(frame, preserve_index=False)
    view = table.set_column(0, "prompt", table.column("prompt").cast(pa.string_view()))
    pq.write_table(view, tmp_path / "t.parquet")
    rows = read_rows(tmp_path / "t.parquet")
    assert rows.frame.to_dict("list") == {"prompt": ["p", "q"], "response": ["a", None], "kind": ["x", "y"],
                                          "id": [2**62, None]}  # fmt: skip
    assert rows.texts(1) == ["a", ""]


def test_read_rows_renders_messages_and_refuses_other_lists_alike_in_every_format(tmp_path: Path, write_format) -> None:
    import pandas as pd

    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    frame = pd.DataFrame({"prompt": [chat[:1], chat[:1]], "response": [chat[1:], chat[1:]], "other": [[1, 2], [3]]})
    messages = []
    for suffix, where in ((".jsonl", "line 1"), (".json", "record 1"), (".parquet", "row 1")):
        rows = read_rows(write_format(frame, tmp_path / f"chat{suffix}"))
        assert rows.texts(0, role="prompt") == ["Human: hi"] * 2 and rows.texts(1) == ["hello"] * 2
        with pytest.raises(UserError) as info:
            rows.texts(2)
        message = str(info.value)
        assert message.startswith(f"{tmp_path / f'chat{suffix}'}: {where}: column 'other' holds a list or object")
        messages.append(message.split(": ", 1)[1].removeprefix(where))
    assert len(set(messages)) == 1


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing.csv", None, r"missing.csv: no such file$"),
        ("empty.csv", b"", r"empty.csv: the file is empty$"),
        ("bad.jsonl", b'{"a": 1}\n{"a": \n', r"line 2 is not valid JSON \(Expecting value\); one JSON object per line"),
        ("list.jsonl", b"[1]\n", r"line 1 is a JSON list, not an object"),
        ("blank.jsonl", b"\n \n", r"the file is empty; expected one JSON object per line"),
        ("latin1.jsonl", b'{"a": "\xe9"}\n', r"line 1 is not valid UTF-8; re-save the file as UTF-8"),
        ("twice.jsonl", b'{"a": 1, "a": 2}\n', r"line 1: key 'a' appears twice in one object; rename one of them"),
    ],
)
def test_read_rows_errors_are_one_line(tmp_path: Path, name: str, content: bytes | None, match: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match) as info:
        read_rows(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


# --- valid data the readers once refused -----------------------------------------------------------------------


def test_fields_longer_than_a_read_block_and_the_csv_modules_limit_are_read(tmp_path: Path, pair_set) -> None:
    from pipeline.data import delimited

    long = "word " * 40_000  # 200 kB: over the csv module's default 128 KiB field limit
    huge = "x" * (delimited._CSV_BLOCK + 10)  # one record longer than pyarrow's read block
    path = write_csv(tmp_path / "long.csv", f'prompt,answer,rank\np,"{long}",1\np,{huge},2\nq,"a ""b",1\nq,c,2\n')
    dataset, report = build_dataset(path, 0.5, 1)
    assert report.pairs == 2 and ("p", long, huge, 1.0) in pair_set(dataset)
    # An odd number of quotes sends the file through the csv module too.
    odd = write_csv(tmp_path / "odd.csv", f'prompt,answer,rank\np,"{long}",1\np,5" screen,2\n')
    assert read_pairs(odd, input_shape="ranked")[1].pairs == 1


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_integers_beyond_float64_in_json_are_read_exactly(tmp_path: Path, suffix: str, write_bytes) -> None:
    big = 2**64 + 1
    lines = [b'{"id": %d, "prompt": "p", "answer": "a", "rank": 1}' % big,
             b'{"id": 1.5, "prompt": "p", "answer": "b", "rank": %d}' % (2**63 + 1)]  # fmt: skip
    content = b"[" + b",".join(lines) + b"]" if suffix == ".json" else b"\n".join(lines)
    pairs, report = read_pairs(write_bytes(tmp_path / f"big{suffix}", content), input_shape="ranked")
    assert report.pairs == 1 and pairs.chosen.tolist() == ["a"]
    wide = write_bytes(tmp_path / f"wide{suffix}", content.replace(b'"p"', b"%d" % big))  # a 65-bit prompt: its text
    assert read_pairs(wide, input_shape="ranked")[0].prompt.tolist() == [str(big)]


def test_category_and_string_view_text_columns_are_text(tmp_path: Path, ranked_frame, pair_set) -> None:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = ranked_frame()
    reference, _ = build_dataset(write_csv(tmp_path / "ref.csv", frame.to_csv(index=False)), 0.2, 3)
    categories = frame.assign(prompt=pd.Categorical(frame.prompt), answer=pd.Categorical(frame.answer))
    pq.write_table(pa.Table.from_pandas(categories, preserve_index=False), tmp_path / "cat.parquet")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for name in ("prompt", "answer"):
        table = table.set_column(table.column_names.index(name), name, table.column(name).cast(pa.string_view()))
    pq.write_table(table, tmp_path / "view.parquet")
    for name in ("cat.parquet", "view.parquet"):
        dataset, _ = build_dataset(tmp_path / name, 0.2, 3)
        assert pair_set(dataset) == pair_set(reference), name


def test_a_json_key_given_twice_is_an_error_not_a_lost_value(tmp_path: Path, write_bytes, fails) -> None:
    content = b'{"prompt": "p", "answer": "a", "rank": 1}\n{"prompt": "p", "answer": "b", "answer": "c", "rank": 2}\n'
    fails(write_bytes(tmp_path / "twice.jsonl", content), r"line 2: key 'answer' appears twice in one object")


def test_text_that_looks_like_a_date_stays_text_as_written(tmp_path: Path, write_bytes) -> None:
    content = b'{"prompt": "2024-01-01", "answer": "2024-01-02T10:00:00", "rank": 1}\n'
    content += b'{"prompt": "2024-01-01", "answer": "b", "rank": 2}\n'
    pairs, _ = read_pairs(write_bytes(tmp_path / "dates.jsonl", content), input_shape="ranked")
    assert pairs.prompt.tolist() == ["2024-01-01"] and pairs.chosen.tolist() == ["2024-01-02T10:00:00"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet"])
def test_an_unreadable_file_is_one_line_naming_it(tmp_path: Path, suffix: str, fails) -> None:
    path = write_csv(tmp_path / f"secret{suffix}", "prompt,answer,rank\np,a,1\n")
    path.chmod(0)
    try:
        message = fails(path, r"cannot read the file \(Permission denied\); check its permissions")
        assert message.startswith(str(path))
        with pytest.raises(UserError, match=r"cannot read the file \(Permission denied\)"):
            read_rows(path)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet"])
def test_a_permission_error_on_open_is_one_line_naming_the_file(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch, fails
) -> None:
    """The same as the chmod test above, where the tests run as root (which chmod does not stop)."""
    import builtins
    import io

    path = write_csv(tmp_path / f"secret{suffix}", "prompt,answer,rank\np,a,1\n")
    real_open = builtins.open

    def denied(file, *args, **kwargs):
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    monkeypatch.setattr(io, "open", denied)
    message = fails(path, r"cannot read the file \(Permission denied\); check its permissions$")
    assert message.startswith(f"{path}: ")
    with pytest.raises(UserError, match=r"cannot read the file \(Permission denied\); check its permissions$"):
        read_rows(path)
