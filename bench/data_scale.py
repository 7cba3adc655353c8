"""Data step at scale: a generated 1,000,000-row ranked CSV -> saved DatasetDict, timed end to end.

Generates 250,000 prompts x 4 ranked answers (about 200 characters each, with commas, quotes and line breaks that
need CSV quoting; rows shuffled) in a temporary directory, then runs the data CLI exactly as a user would,

    python -m pipeline.data --config recipes/quickstart.yaml --dataset_path BIG.csv --output_dir OUT

in a subprocess, `--runs` times, measuring wall time and the child's peak RSS (os.wait4). Target: <= 60 s and
<= 4 GB on a 2-core machine. Prints a Markdown table (paste it into bench/RESULTS.md).

    HF_HUB_OFFLINE=1 python bench/data_scale.py [--prompts 250000] [--answers 4] [--runs 2] [--keep DIR] [--profile]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from common import QUICKSTART, REPO, child_env, machine

TARGET_S, TARGET_GB = 60.0, 4.0
WORDS = (
    "the a reward model ranks answers to prompts, and humans said which one is better; it learns from pairs "
    'of "chosen" and "rejected" texts. python code list sort cook pasta water boil salt travel city rome paris '
    "science light speed sky blue red because it this that you your we they can not no yes please help write story"
).split(" ")


def text_pool(rng: np.random.Generator, size: int, chars: int) -> pa.Array:
    """`size` random texts of `chars` +- 25% characters (a small Python loop; the rows are built from it in Arrow)."""
    pool = []
    for i in range(size):
        words, length, target = [], 0, int(chars * rng.uniform(0.75, 1.25))
        while length < target:
            word = WORDS[rng.integers(len(WORDS))]
            words.append(word)
            length += len(word) + 1
        text = " ".join(words)[:target]
        if i % 50 == 0:
            text = text[: target // 2] + "\n" + text[target // 2 + 1 :]  # a multi-line answer
        pool.append(text)
    return pa.array(pool, pa.string())


def generate(path: Path, prompts: int, answers: int, seed: int = 0) -> int:
    """Write the ranked CSV; returns its size in bytes. Vectorised: no Python loop over rows."""
    rng = np.random.default_rng(seed)
    rows = prompts * answers
    pool = text_pool(rng, 4096, 190)
    prompt_id = np.repeat(np.arange(prompts), answers)
    answer_no = np.tile(np.arange(answers), prompts)
    rank = (np.argsort(rng.random((prompts, answers)), axis=1) + 1).ravel()
    prompt = pc.binary_join_element_wise(
        "Prompt ", pc.cast(pa.array(prompt_id), pa.string()), ": ", pool.take(pa.array(prompt_id % 4096)), ""
    )
    answer = pc.binary_join_element_wise(
        "Answer ",
        pc.cast(pa.array(answer_no), pa.string()),
        " to ",
        pc.cast(pa.array(prompt_id), pa.string()),
        ": ",
        pool.take(pa.array(rng.integers(0, 4096, rows))),
        "",
    )
    order = rng.permutation(rows)  # a real export is not sorted by prompt
    table = pa.table({"prompt": prompt.take(order), "answer": answer.take(order), "rank": pa.array(rank[order])})
    pacsv.write_csv(table, str(path), pacsv.WriteOptions(quoting_style="needed"))
    return path.stat().st_size


def run_cli(csv_path: Path, out: Path) -> tuple[float, float, float, int, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS (GB) of the child, exit code and its output."""
    command = [sys.executable, "-m", "pipeline.data", "--config", QUICKSTART]
    command += ["--dataset_path", str(csv_path), "--output_dir", str(out)]
    started = time.perf_counter()
    child = subprocess.Popen(
        command, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss * 1024 / 1e9, child.returncode, output  # ru_maxrss is in KiB on Linux


def profile(csv_path: Path, out: Path) -> None:
    """Stage-by-stage cProfile of build + save, in this process (slower than the CLI because of the profiler)."""
    import cProfile
    import pstats

    from pipeline.data import build_dataset, save_dataset

    profiler = cProfile.Profile()
    profiler.enable()
    dataset, report = build_dataset(csv_path, 0.2, 42)
    save_dataset(dataset, report, out)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=250_000)
    parser.add_argument("--answers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--keep", help="generate into (and keep) this directory instead of a temporary one")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of build + save")
    args = parser.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="q2-data-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        csv_path = work / "ranked.csv"
        started = time.perf_counter()
        size = generate(csv_path, args.prompts, args.answers)
        rows = args.prompts * args.answers
        print(f"generated {rows:,} rows, {size / 1e6:.0f} MB in {time.perf_counter() - started:.1f} s: {csv_path}")
        print(f"machine: {machine()}")
        print()
        columns = ["run", "rows", "CSV MB", "pairs", "wall s", "CPU s (user+sys)", "peak RSS GB", "load avg before"]
        print("| " + " | ".join([*columns, "within 60 s / 4 GB"]) + " |")
        print("|---" * (len(columns) + 1) + "|")
        for run in range(1, args.runs + 1):
            out = work / f"processed-{run}"
            load = os.getloadavg()[0]
            wall, cpu, rss, code, output = run_cli(csv_path, out)
            if code != 0:
                print(output)
                raise SystemExit(f"run {run} failed with exit code {code}")
            counts = [line for line in output.splitlines() if line.strip().startswith("prompts ")]
            pairs = counts[0].split("pairs ")[1].split(",")[0] if counts else "?"
            ok = "yes" if wall <= TARGET_S and rss <= TARGET_GB else "NO"
            cells = [run, f"{rows:,}", f"{size / 1e6:.0f}", pairs, f"{wall:.1f}", f"{cpu:.1f}", f"{rss:.2f}"]
            cells.append(f"{load:.1f}")
            print("| " + " | ".join(map(str, [*cells, ok])) + " |")
            shutil.rmtree(out, ignore_errors=True)
        print()
        print(output.strip())
        if args.profile:
            profile(csv_path, work / "processed-profile")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
