"""Load test of the HTTP server (`python -m pipeline.serve`) against in-process `RewardScorer` on the same pairs.

    python bench/serve_load.py [--model DIR] [--clients 1,16,64] [--requests 64] [--precision auto] [--one_call]

GRPO-sized requests: each is 8-64 (prompt, answer) pairs of HH-RLHF harmless (../shared/data/hh_harmless_dev.jsonl,
chosen and rejected answers alike). The same request list is scored:
- by the server, started as a subprocess on 127.0.0.1 (port chosen by the OS), at each client count: that many
  threads, each with its own keep-alive connection, send the first max(8, 2 x clients) requests (at most
  --requests), each once, to `/score`;
- in process, just before each level of at most --compare_up_to clients (the machine may be shared: both sides then
  see the same load), the same requests with one `RewardScorer.score` call each (what an RL loop calling the scorer
  itself does); with --one_call also all requests in one call (one big length-sorted batch plan). The calls are made
  from a worker thread, as the server's replicas make them: on the 2-core machine of bench/RESULTS.md, torch calls
  from the main thread ran up to 5x slower until another thread had run one (cause not found).
fp32 by default, as the server: with bf16 on a CPU the first batches of each new shape are several times slower
(oneDNN prepares its kernels per shape), which would measure warm-up rather than serving.
Reported per level: throughput (pairs/s over the level's wall time) and its ratio to in-process on the same requests,
p50/p99 latency per request, failed (non-200) and lost (no answer, or a wrong number of scores) requests, and the
largest |score difference| from in-process (over the requests scored in process). Loopback only; bounded: each
level stops issuing requests after --level_timeout seconds (those left are reported as not sent); the server is
stopped with SIGTERM at the end (its exit code is reported).
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import httpx
import numpy as np
from common import HH_JSONL, REPO, child_env, machine, require

from pipeline.model.base import EMBEDDED_BASE_MODEL, resolve_base_model
from pipeline.model.scorer import RewardScorer

Request = tuple[list[str], list[str]]


def make_requests(path: Path, count: int, low: int, high: int, seed: int) -> list[Request]:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    pairs = [(r["prompt"], r[k]) for r in records for k in ("chosen", "rejected") if r[k].strip()]
    rng = np.random.default_rng(seed)
    requests = []
    for _ in range(count):
        chosen = [pairs[i] for i in rng.choice(len(pairs), size=int(rng.integers(low, high + 1)), replace=False)]
        requests.append(([p for p, _ in chosen], [a for _, a in chosen]))
    return requests


def in_process(scorer: RewardScorer, requests: list[Request]) -> tuple[list[float], list[np.ndarray]]:
    """Seconds and scores of one `score` call per request."""
    seconds, scores = [], []
    for prompts, responses in requests:
        start = time.perf_counter()
        scores.append(scorer.score(prompts, responses))
        seconds.append(time.perf_counter() - start)
    return seconds, scores


def one_call(scorer: RewardScorer, requests: list[Request]) -> float:
    """Pairs/s of one call over all pairs."""
    prompts = [x for p, _ in requests for x in p]
    start = time.perf_counter()
    scorer.score(prompts, [x for _, r in requests for x in r])
    return len(prompts) / (time.perf_counter() - start)


def start_server(model: str, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "pipeline.serve", "--model", model, "--host", "127.0.0.1", "--port", "0",
               "--precision", args.precision, "--devices", args.devices, "--max_wait_ms", str(args.max_wait_ms),
               "--log_level", "warning"]  # fmt: skip
    env = child_env()
    env.pop("Q2_REWARD_API_KEY", None)
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if match := re.search(r" on (http://127\.0\.0\.1:\d+) ", line):
            threading.Thread(target=process.stderr.read, daemon=True).start()  # keep draining the log
            url = match.group(1)
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/health", timeout=5).status_code == 200:
                        return process, url
                except httpx.TransportError:
                    time.sleep(0.1)
        if not line and process.poll() is not None:
            break
    process.kill()
    raise SystemExit(f"the server did not start (exit code {process.poll()})")


def run_level(url: str, requests: list[Request], expected: list, clients: int, timeout: float) -> dict:
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(requests)):
        todo.put(i)
    latencies, failed, lost, diffs, pairs_done = [], 0, 0, [0.0], 0
    lock = threading.Lock()
    stop_issuing = time.monotonic() + timeout

    def client() -> None:
        nonlocal failed, lost, pairs_done
        with httpx.Client(timeout=300) as http:
            while time.monotonic() < stop_issuing:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                prompts, responses = requests[i]
                start = time.perf_counter()
                try:
                    response = http.post(url + "/score", json={"prompts": prompts, "responses": responses})
                except httpx.HTTPError:
                    with lock:
                        lost += 1
                    continue
                elapsed = time.perf_counter() - start
                with lock:
                    if response.status_code != 200:
                        failed += 1
                        continue
                    scores = response.json().get("scores", [])
                    if len(scores) != len(prompts):
                        lost += 1
                        continue
                    latencies.append(elapsed)
                    pairs_done += len(prompts)
                    if expected[i] is not None:
                        diffs.append(float(np.max(np.abs(np.asarray(scores) - expected[i]))))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "requests_answered": len(latencies),
        "requests_not_sent": todo.qsize(),
        "failed": failed,
        "lost": lost,
        "pairs": pairs_done,
        "wall_s": wall,
        "pairs_per_s": pairs_done / wall,
        "p50_s": float(np.percentile(latencies, 50)) if latencies else None,
        "p99_s": float(np.percentile(latencies, 99)) if latencies else None,
        "max_abs_diff": max(diffs),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="default: the embedded DistilBERT (random head)")
    parser.add_argument("--data", type=Path, default=HH_JSONL)
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--requests", type=int, default=64, help="requests at most per level")
    parser.add_argument("--min_pairs", type=int, default=8)
    parser.add_argument("--max_pairs", type=int, default=64)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--devices", default="auto")
    parser.add_argument("--max_wait_ms", type=float, default=5.0)
    parser.add_argument("--level_timeout", type=float, default=120.0, help="seconds a level may issue requests")
    parser.add_argument("--compare_up_to", type=int, default=16, help="in-process comparison up to this many clients")
    parser.add_argument("--one_call", action="store_true", help="also time in-process scoring in one call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    model = args.model or resolve_base_model(EMBEDDED_BASE_MODEL)
    requests = make_requests(require(args.data), args.requests, args.min_pairs, args.max_pairs, args.seed)
    sizes = [len(p) for p, _ in requests]
    print(f"{len(requests)} requests, {sum(sizes)} pairs; {machine(load=True)}", file=sys.stderr)

    scorer = RewardScorer.from_pretrained(model, precision=args.precision, device="auto")
    worker = ThreadPoolExecutor(1)
    worker.submit(scorer.score, *requests[0]).result()  # warm-up

    process, url = start_server(str(model), args)
    levels, expected = [], [None] * len(requests)
    try:
        httpx.post(url + "/score", json={"prompts": requests[0][0], "responses": requests[0][1]}, timeout=300)
        for clients in (int(c) for c in args.clients.split(",")):
            sent = requests[: min(len(requests), max(8, 2 * clients))]
            if clients <= args.compare_up_to:
                seconds, expected[: len(sent)] = worker.submit(in_process, scorer, sent).result()
            level = run_level(url, sent, expected, clients, args.level_timeout)
            if clients <= args.compare_up_to:
                level["in_process_pairs_per_s"] = sum(sizes[: len(sent)]) / sum(seconds)
                level["vs_in_process"] = level["pairs_per_s"] / level["in_process_pairs_per_s"]
            levels.append(level)
            print(json.dumps(level), file=sys.stderr)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            exit_code = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            exit_code = "killed after 120 s"
    best = worker.submit(one_call, scorer, requests).result() if args.one_call else None

    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(load=True),
        "command": "python bench/serve_load.py " + " ".join(sys.argv[1:]),
        "precision": scorer.precision,
        "device": str(scorer.device),
        "requests": len(requests),
        "pairs": sum(sizes),
        "in_process_one_call_pairs_per_s": best,
        "levels": levels,
        "server_exit_code": exit_code,
    }
    print_table(levels)
    tail = f"; in one call {best:.1f} pairs/s" if best else ""
    print(f"precision {scorer.precision} on {scorer.device}; server exit code {exit_code}{tail}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def print_table(levels: list[dict]) -> None:
    print("| clients | requests (pairs) | server pairs/s | in-process pairs/s | ratio | p50 s | p99 s | failed | "
          "lost | not sent | max abs diff |\n|---|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    for level in levels:
        print(
            f"| {level['clients']} | {level['requests_answered']} ({level['pairs']}) | {level['pairs_per_s']:.1f} | "
            f"{level.get('in_process_pairs_per_s', float('nan')):.1f} | "
            f"{level.get('vs_in_process', float('nan')):.2f} | {level['p50_s']:.2f} | "
            f"{level['p99_s']:.2f} | {level['failed']} | {level['lost']} | {level['requests_not_sent']} | "
            f"{level['max_abs_diff']:.1e} |"
        )


if __name__ == "__main__":
    main()
