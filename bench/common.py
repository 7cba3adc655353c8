"""What the bench scripts share: where the repository and the data are, the machine, the training command.

Imported first by every script in bench/ (`from common import ...`: a script's own folder is first on sys.path),
it also puts this checkout first on sys.path, so that `pipeline` is this checkout's package even where another
checkout is installed editable (a study running from a git worktree). Standard library only at import time: the GPU
check imports it on a bare GPU machine.

The HH-RLHF harmless dev data is `../shared/data/hh_harmless_dev.csv` beside the checkout (its pairs also as
`hh_harmless_dev.jsonl`); `Q2_HH_DATA=PATH/TO/FILE.csv` points elsewhere (the .jsonl of the same name beside it).
A script's own flag (`--hh`, `--data`) overrides both.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))

HH_ENV = "Q2_HH_DATA"
HH_CSV = Path(os.environ.get(HH_ENV) or REPO.parent / "shared" / "data" / "hh_harmless_dev.csv")
HH_JSONL = HH_CSV.with_suffix(".jsonl")  # the same pairs, already paired (read without the datasets package)
ANSWERS = REPO / "data" / "answers.csv"
QUICKSTART = "recipes/quickstart.yaml"
# The CPU flags that decide which precision is fast here (bf16/fp16 hardware, vector width).
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "asimd", "sve")


def require(path: Path, flag: str = "--data") -> Path:
    """`path` if it is a file; otherwise stop with one line that says how to point at the data."""
    if not Path(path).is_file():
        raise SystemExit(f"error: {path} does not exist; pass {flag} PATH or set {HH_ENV} to the HH dev CSV")
    return Path(path)


def child_env(**extra: str) -> dict[str, str]:
    """A benchmark's child process: the Hub offline, this checkout's package first on PYTHONPATH, then `extra`."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path, **extra}


def train_command(*flags: str, recipe: str = QUICKSTART, launch: Sequence[str] | None = None) -> list[str]:
    """`python pipeline/train.py --config RECIPE FLAGS...`, under `accelerate launch LAUNCH...` when `launch` is
    given (its flags, e.g. `["--config_file", "accelerate_config.yaml", "--num_processes", "2"]`). Run from REPO."""
    launcher = [] if launch is None else ["-m", "accelerate.commands.launch", *launch]
    return [sys.executable, *launcher, "pipeline/train.py", "--config", recipe, *flags]


def run_timed(command: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run `command` in REPO with its output captured; (the result, wall seconds)."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=child_env() if env is None else env)
    return result, time.perf_counter() - started


def check(result: subprocess.CompletedProcess, command: list[str], what: str = "training failed") -> None:
    """Stop with the command and the end of its stderr when it failed."""
    if result.returncode != 0:
        raise SystemExit(f"{what}: {' '.join(command)}\n{result.stderr[-3000:]}")


def use_all_cores() -> None:
    """torch's threads: one per core this process may run on (torch's default counts the machine's)."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))


def cpu() -> tuple[str, list[str]]:
    """The CPU's model name and which of VECTOR_FLAGS it has: from lscpu, else /proc/cpuinfo, else `platform`."""
    for read in (_lscpu, lambda: Path("/proc/cpuinfo").read_text()):
        try:
            text = read()
        except (OSError, subprocess.SubprocessError):
            continue
        name = re.search(r"^model name\s*:\s*(.+)$", text, re.M | re.I)
        flags = re.search(r"^(?:flags|features)\s*:\s*(.+)$", text, re.M | re.I)
        if name:
            found = set(flags.group(1).split()) if flags else set()
            return name.group(1).strip(), [f for f in VECTOR_FLAGS if f in found]
    return platform.processor() or platform.machine() or "unknown CPU", []


def _lscpu() -> str:
    env = {**os.environ, "LC_ALL": "C"}  # English field names
    return subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, env=env).stdout


def machine(load: bool = False) -> str:
    """One line for a result: CPU model and flags, cores, RAM, Python; torch, its CPU capability and threads; the GPU
    (if any); with `load`, the 1-minute load average."""
    name, flags = cpu()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts = [f"{name} ({' '.join(flags) or 'none of ' + '/'.join(VECTOR_FLAGS[:3])})",
             f"{os.cpu_count()} cores ({usable} usable)", _ram(), f"Python {platform.python_version()}"]  # fmt: skip
    try:
        import torch
    except ImportError:
        parts.append("no torch")
    else:
        parts.append(f"torch {torch.__version__} (CPU capability {torch.backends.cpu.get_cpu_capability()}, "
                     f"{torch.get_num_threads()} threads)")  # fmt: skip
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        gpu = f"GPU {torch.cuda.get_device_name(0)}" + (f" x{count}" if count > 1 else "") if count else "no GPU"
        parts.append(gpu)
    if load and hasattr(os, "getloadavg"):
        parts.append(f"load {os.getloadavg()[0]:.2f}")
    return ", ".join(parts)


def _ram() -> str:
    try:
        memory = next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        return "? RAM"
    return f"{int(memory.split()[1]) / 1024**2:.0f} GB RAM"
