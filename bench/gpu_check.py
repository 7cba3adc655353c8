"""The GPU check: every GPU path of the pipeline in one short run, a table, and bench/results/gpu_check.json.

    bash bench/gpu_check.sh [--dry-run] [--hh PATH] [--out DIR] [--json FILE]

Steps (each in its own process, with a time limit; a failed step does not stop the others):
1. gpu_tests: the test suite's `gpu`-marked tests (CUDA paths: bf16 training step, scorer on CUDA vs fp32 CPU,
   first-token path under fp16/bf16, reward function on CUDA, server replica on CUDA);
2. quickstart: the quickstart recipe end to end (bf16 where the GPU has it), then the README's Quick Start snippet on
   the held-out pairs must give the accuracy the run reported;
3. hh_epoch: one epoch on HH-RLHF harmless dev pairs, fp32 and bf16: tokens/s and held-out accuracy;
4. score_speed: bench/score_speed.py (targets: `auto` >= 20x the Quick Start loop, >= 99% of its decisions);
5. fsdp: the FSDP Accelerate config with one process (the full-weights gather path);
6. grpo: 2 GRPO steps of a tiny policy with the trained model as `RewardFunction` on the GPU;
7. server: `python -m pipeline.serve` under bench/serve_load.py for 30 s (when pipeline.serve exists).
`--dry-run` runs the same steps on the CPU at the smallest sizes (CI runs it): it checks the script, not the speed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import ANSWERS, HH_CSV, REPO, machine, train_command

BASE: list[str] = []  # --model_name_or_path override (--base_model), e.g. a tiny model for a fast dry run
HH_CANDIDATES = (HH_CSV, REPO / ".gpu/hh_harmless_dev.csv")


def run(cmd: list[str], out: Path, name: str, timeout: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run one command, its output to OUT/NAME.log; (exit code, last lines). 124 when it ran past `timeout`."""
    log = out / f"{name}.log"
    with open(log, "w") as handle:
        try:
            code = subprocess.run(
                cmd,
                cwd=REPO,
                stdout=handle,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env={**os.environ, **(env or {})},
            ).returncode
        except subprocess.TimeoutExpired:
            code = 124
    return code, "\n".join(log.read_text(errors="replace").splitlines()[-15:])


def train(out: Path, name: str, args: list[str], timeout: float) -> dict[str, Any]:
    cmd = train_command("--output_dir", str(out / name), "--overwrite_output_dir", "true", *BASE, *args)
    code, tail = run(cmd, out, name, timeout)
    result: dict[str, Any] = {"exit": code}
    results_file = out / name / "eval_results.json"
    if code == 0 and results_file.is_file():
        saved = json.loads(results_file.read_text())
        result.update(
            {k: saved.get(k) for k in ("pairwise_accuracy", "num_pairs", "train_runtime_s", "total_runtime_s")}
        )
        rates = [float(x) for x in re.findall(r"'tokens_per_s': '?([0-9.]+)", (out / f"{name}.log").read_text())]
        result["tokens_per_s"] = round(sum(rates) / len(rates), 1) if rates else None
    else:
        result["tail"] = tail
    return result


def quick_start_accuracy(model_dir: Path, data: str, test_size: float) -> float:
    """The README's Quick Start call on every held-out pair of the run (same split as training)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.data import build_dataset

    dataset, _ = build_dataset(data, test_size=test_size, split_seed=42)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def score(prompt: str, response: str) -> float:
        inputs = tokenizer(prompt, response, return_tensors="pt", truncation=True, max_length=512)
        with torch.no_grad():
            return model(**inputs).logits.item()

    test = dataset["test"]
    correct = [
        score(p, c) > score(p, r) for p, c, r in zip(test["prompt"], test["chosen"], test["rejected"], strict=True)
    ]
    return sum(correct) / len(correct)


def step_gpu_tests(ctx: dict[str, Any]) -> dict[str, Any]:
    code, tail = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests"],
                     ctx["out"], "gpu_tests", ctx["timeout"])  # fmt: skip
    summary = tail.splitlines()[-1] if tail else ""
    ok = code == 0 or (ctx["dry_run"] and code == 5)  # 5: every gpu test deselected or skipped on a CPU
    return {"ok": ok, "exit": code, "summary": summary}


def step_quickstart(ctx: dict[str, Any]) -> dict[str, Any]:
    args = ["--max_steps", "2"] if ctx["dry_run"] else []
    result = train(ctx["out"], "quickstart", args, ctx["timeout"])
    if result["exit"] != 0:
        return {"ok": False, **result}
    snippet = quick_start_accuracy(ctx["out"] / "quickstart", str(ANSWERS), 0.2)
    result["quick_start_accuracy"] = snippet
    return {"ok": abs(snippet - result["pairwise_accuracy"]) < 1e-9, **result}


def step_hh_epoch(ctx: dict[str, Any]) -> dict[str, Any]:
    if ctx["hh"] is None:
        return {"ok": None, "note": "no HH data (--hh, $Q2_HH_DATA, ../shared/data or .gpu/hh_harmless_dev.csv)"}
    common = ["--dataset_path", str(ctx["hh"]), "--num_train_epochs", "1", "--test_size", "0.2"]
    if ctx["dry_run"]:
        common += ["--max_steps", "1", "--test_size", "0.05", "--reward_stats_max_answers", "64"]
    runs = {"fp32": train(ctx["out"], "hh_fp32", [*common, "--bf16", "false"], ctx["timeout"])}
    if ctx["gpu"]:
        runs["bf16"] = train(ctx["out"], "hh_bf16", [*common, "--bf16", "true"], ctx["timeout"])
        fp32, bf16 = runs["fp32"].get("tokens_per_s"), runs["bf16"].get("tokens_per_s")
        runs["bf16_speedup"] = round(bf16 / fp32, 2) if fp32 and bf16 else None
    return {"ok": all(r["exit"] == 0 for r in runs.values() if isinstance(r, dict)), **runs}


def step_score_speed(ctx: dict[str, Any]) -> dict[str, Any]:
    target = ctx["out"] / "score_speed.json"
    args = ["--json", str(target)]
    if ctx["hh"] is not None:
        args += ["--data", str(ctx["hh"].with_suffix(".jsonl"))] if ctx["hh"].with_suffix(".jsonl").is_file() else []
    else:
        args += ["--data", str(ANSWERS)]
    if ctx["dry_run"]:
        args += ["--pairs", "16", "--rounds", "1", "--no_full_forward"]
    if BASE:
        args += ["--model", BASE[1]]
    code, tail = run([sys.executable, "bench/score_speed.py", *args], ctx["out"], "score_speed", ctx["timeout"])
    if code != 0 or not target.is_file():
        return {"ok": False, "exit": code, "tail": tail}
    modes = json.loads(target.read_text()).get("rows", [])
    auto = next((m for m in modes if "= auto" in str(m.get("mode", ""))), None)
    result: dict[str, Any] = {"exit": code, "modes": modes}
    if auto:
        result["auto_x_loop"] = round(auto["speedup"], 2)
        result["auto_decisions"] = round(auto["pair_agreement"], 4)
    if ctx["gpu"] and auto:
        result["targets_met"] = auto["speedup"] >= 20 and auto["pair_agreement"] >= 0.99
    return {"ok": True, **result}


def step_fsdp(ctx: dict[str, Any]) -> dict[str, Any]:
    name = "fsdp"
    steps = "2" if ctx["dry_run"] else "20"
    launch = ["--config_file", "recipes/accelerate/fsdp.yaml", "--num_processes", "1"]
    cmd = train_command("--output_dir", str(ctx["out"] / name), "--overwrite_output_dir", "true", "--max_steps", steps,
                        *BASE, launch=launch)  # fmt: skip
    code, tail = run(cmd, ctx["out"], name, ctx["timeout"])
    saved = ctx["out"] / name / "eval_results.json"
    accuracy = json.loads(saved.read_text())["pairwise_accuracy"] if saved.is_file() else None
    engine = re.search(r"training: world size \d+ \((\w+)\)", (ctx["out"] / f"{name}.log").read_text())
    return {"ok": code == 0, "exit": code, "engine": engine.group(1) if engine else None, "accuracy": accuracy,
            **({} if code == 0 else {"tail": tail})}  # fmt: skip


GRPO_SCRIPT = """
import sys, tempfile
from pathlib import Path
sys.path.insert(0, "tests")
from helpers import build_tiny_causal_lm
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer
from pipeline import RewardFunction
reward = RewardFunction.from_pretrained(sys.argv[1], precision="auto")
work = Path(tempfile.mkdtemp())
policy = build_tiny_causal_lm(work / "policy")
data = Dataset.from_dict({"prompt": ["why is the sky blue", "how do i cook pasta", "write a short story", "a city"]})
args = GRPOConfig(output_dir=str(work / "out"), per_device_train_batch_size=4, num_generations=2,
                  max_completion_length=8, max_steps=2, report_to="none", logging_steps=1, save_strategy="no",
                  bf16=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available())
trainer = GRPOTrainer(model=str(policy), reward_funcs=[reward], args=args, train_dataset=data)
trainer.train()
logged = [e["rewards/q2_reward/mean"] for e in trainer.state.log_history if "rewards/q2_reward/mean" in e]
print("GRPO_RESULT", reward.scorer.device, reward.scorer.precision, len(logged), logged)
"""


def step_grpo(ctx: dict[str, Any]) -> dict[str, Any]:
    model = ctx["out"] / "quickstart"
    if not (model / "config.json").is_file():
        return {"ok": False, "note": "needs the quickstart step's model"}
    code, tail = run([sys.executable, "-c", GRPO_SCRIPT, str(model)], ctx["out"], "grpo", ctx["timeout"])
    line = next((x for x in tail.splitlines() if x.startswith("GRPO_RESULT")), "")
    return {"ok": code == 0 and bool(line), "exit": code, "result": line.removeprefix("GRPO_RESULT ").strip(),
            **({} if code == 0 else {"tail": tail})}  # fmt: skip


def step_server(ctx: dict[str, Any]) -> dict[str, Any]:
    if not (REPO / "pipeline/serve").is_dir() or not (REPO / "bench/serve_load.py").is_file():
        return {"ok": None, "note": "pipeline.serve is not in this checkout"}
    data = ctx["hh"].with_suffix(".jsonl") if ctx["hh"] is not None else None
    if data is None or not data.is_file():
        return {"ok": None, "note": "no HH pairs (.jsonl) for the load bench"}
    target = ctx["out"] / "serve_load.json"
    load = (
        ["--clients", "1,4", "--requests", "8", "--level_timeout", "5"] if ctx["dry_run"] else ["--level_timeout", "30"]
    )
    cmd = [sys.executable, "bench/serve_load.py", "--model", str(ctx["out"] / "quickstart"), "--data", str(data),
           "--precision", "auto", *load, "--json", str(target)]  # fmt: skip
    code, tail = run(cmd, ctx["out"], "server", ctx["timeout"])
    result = json.loads(target.read_text()) if target.is_file() else {}
    return {"ok": code == 0, "exit": code, "load": result, **({} if code == 0 else {"tail": tail})}


STEPS = {"gpu_tests": step_gpu_tests, "quickstart": step_quickstart, "hh_epoch": step_hh_epoch,
         "score_speed": step_score_speed, "fsdp": step_fsdp, "grpo": step_grpo, "server": step_server}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the same steps, tiny, on the CPU")
    parser.add_argument("--hh", type=Path, help="HH-RLHF pairs CSV (default: $Q2_HH_DATA, ../shared/data or .gpu/)")
    parser.add_argument("--out", type=Path, help="work folder for models and logs (default: a folder in /tmp)")
    parser.add_argument("--json", type=Path, help="results file (default: bench/results/gpu_check.json on a GPU)")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of: " + ", ".join(STEPS))
    parser.add_argument("--step_timeout", type=float, default=420.0, help="seconds per step")
    parser.add_argument("--base_model", help="train from this model instead of the recipe's (a tiny one: fast dry run)")
    args = parser.parse_args()
    import torch

    gpu = torch.cuda.is_available() and not args.dry_run
    if not gpu and not args.dry_run:
        sys.exit("error: no CUDA GPU here; run with --dry-run to check the script on the CPU")
    if args.base_model:
        BASE.extend(["--model_name_or_path", str(args.base_model)])
    out = args.out or Path(f"/tmp/q2-gpu-check-{os.getpid()}")
    out.mkdir(parents=True, exist_ok=True)
    hh = args.hh or next((p for p in HH_CANDIDATES if p.is_file()), None)
    env = {} if gpu else {"CUDA_VISIBLE_DEVICES": ""}
    os.environ.update(env)
    ctx = {"gpu": gpu, "dry_run": args.dry_run, "out": out, "hh": hh, "timeout": args.step_timeout}
    device = torch.cuda.get_device_name(0) if gpu else f"CPU ({platform.processor() or platform.machine()})"
    results: dict[str, Any] = {"device": device, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "torch": torch.__version__, "machine": machine(), "dry_run": args.dry_run,
                               "steps": {}}  # fmt: skip
    for name in args.steps.split(","):
        started = time.perf_counter()
        try:
            outcome = STEPS[name](ctx)
        except Exception as error:  # noqa: BLE001 - one broken step must not hide the others' results
            outcome = {"ok": False, "error": f"{type(error).__name__}: {error}"}
        outcome["seconds"] = round(time.perf_counter() - started, 1)
        results["steps"][name] = outcome
        status = {True: "ok", False: "FAILED", None: "skipped"}[outcome["ok"]]
        shown = {k: v for k, v in outcome.items() if k not in ("ok", "seconds", "tail", "modes", "load")}
        print(f"| {name} | {status} | {outcome['seconds']} s | {json.dumps(shown, default=str)[:160]} |", flush=True)
    target = args.json or (REPO / "bench/results/gpu_check.json" if gpu else out / "gpu_check.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {target}; logs and models: {out}")
    failed = [name for name, outcome in results["steps"].items() if outcome["ok"] is False]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
