"""The documentation stays true: README.md is short, every repository path and link in README.md, CONTRIBUTING.md
and docs/*.md exists, the README's package picture is the one tests/test_layout.py enforces, and every command in
their code blocks runs.

Commands are the lines of ```bash blocks (a trailing backslash continues a line), the Python of ```python blocks,
and the commands in table cells (inline code starting with `python`, `accelerate`, `curl` or `q2-reward` that has a
flag). They run in a temporary copy of the repository (data/ copied, the code linked) whose reward_model/ holds a
tiny model trained by the pipeline itself (tests/helpers.py), so a command that uses the trained model runs exactly
as a user types it after the main command, in seconds. Each command runs once per session; commands that need no
server run first, two at a time (those that write the same output one after another). What each kind gets:

- `pip install ...` parts of a line are left out: CI (.ci/run) installs before the tests run.
- data, evaluate, score (also under `accelerate launch`), every `--help`: run as written, and must exit 0.
- Python blocks: run as written in this process (their imports are loaded already), with the copy as the current
  directory, as tests/score/test_reward_function.py runs the README's GRPO example.
- training (`... pipeline/train.py --config ...`, `q2-reward train --config ...`): a real run of the main job takes
  minutes (bench/RESULTS.md, "Main job and base model"), too long for CI on 2 cores. Its output_dir already holds a
  model in the copy, so the command runs as written through the launcher, the recipe and its checks, and must stop
  before training with the one-line refusal the docs describe ("Running it again stops before training"). Training
  itself is tested on tiny models in tests/test_train.py and tests/training/.
- the server (`python -m pipeline.serve`, `q2-reward serve`): started as written but on a free port (8000 may be
  taken on a shared machine; the port is the only change, also in its clients), waited for until /health answers;
  the commands after it on the same page (curl, the Python client) run against it; then SIGTERM: it must exit 0.
- the test command (`... ruff check . && HF_HUB_OFFLINE=1 python -m pytest`) is what runs this suite, after ruff:
  it is not run again here; a test checks that it is the line .ci/run runs.
- multi-node (`--num_machines N`, N > 1): each machine rank waits for the others, so a command runs as all N of its
  ranks at once on this host (the lines that differ only in `--machine_rank` run once), on a free port instead of
  the documented `--main_process_port`; each rank must do what the command's kind asks (training: the refusal).
- DeepSpeed: it needs the deepspeed package and GPUs, which the test install does not have; skipped when deepspeed
  is not installed.
- the README's GRPO example needs a policy from the Hub: tests/score/test_reward_function.py runs it as written with
  tiny models instead.
- placeholders (YOUR_PAIRS.parquet, ...): the test writes such a file, made from data/answers.csv, before the command.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import REPO, write_recipe

README = REPO / "README.md"
PAGES = [README, REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
MAX_README_LINES = 200
TIMEOUT_S = 300

# --- reading the pages -------------------------------------------------------------------------------------------

FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.S | re.M)
TABLE_COMMAND = re.compile(
    r"`((?:python|accelerate|curl|q2-reward) [^`]* --[^`]+)`"
)  # with a flag: a command, not a name
ROOTS = ("pipeline", "recipes", "bench", "tests", "docs", "data", ".ci")
REPO_PATH = re.compile(rf"(?<![\w./~-])((?:{'|'.join(re.escape(r) for r in ROOTS)})/[\w./-]*)")
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
RESULTS_SECTIONS = re.compile(r"RESULTS\.md`?,? ((?:\"[^\"]+\"(?:,? (?:and )?)?)+)")
# Paths the docs' own commands write (not in a fresh clone).
OUTPUTS = {"data/processed", "data/processed_own", "bench/results/gpu_check.json"}


def blocks(page: Path) -> list[tuple[str, str]]:
    """(language, text) of every fenced code block of a page, in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(page.read_text())]


def shell_lines(text: str) -> list[str]:
    """The commands of a bash block: continuation lines joined, blank lines and comment lines left out."""
    commands, pending = [], ""
    for line in text.splitlines():
        if line.endswith("\\"):
            pending += line[:-1]
            continue
        line, pending = pending + line, ""
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append(line.strip())
    return commands


def steps_of(page: Path) -> list[tuple[str, str]]:
    """("shell" | "python", text) in page order: bash lines, Python blocks, and commands in table cells."""
    text = page.read_text()
    found: list[tuple[int, str, str]] = []
    for m in FENCE.finditer(text):
        language, body = m.group(1), m.group(2)
        if language in ("bash", "sh", "shell"):
            found += [(m.start(), "shell", line) for line in shell_lines(body)]
        elif language == "python":
            found.append((m.start(), "python", body))
    outside = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    offset = 0
    for line in outside.splitlines(keepends=True):
        if line.startswith("|"):
            found += [(offset + m.start(), "shell", m.group(1)) for m in TABLE_COMMAND.finditer(line)]
        offset += len(line)
    return [(kind, body) for _, kind, body in sorted(found, key=lambda item: item[0])]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


# --- the static checks ---------------------------------------------------------------------------------------------


def test_the_readme_is_at_most_200_lines_and_links_every_docs_page() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move details to docs/"
    linked = set(MD_LINK.findall(README.read_text()))
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"docs/{page.name}" in linked, f"README.md does not link docs/{page.name}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_repository_path_named_exists(page: Path) -> None:
    missing = []
    for name in REPO_PATH.findall(page.read_text()):
        name = name.rstrip(".")
        if name not in OUTPUTS and not (REPO / name).exists():
            missing.append(name)
    assert not missing, f"{page.relative_to(REPO)} names paths that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_and_anchor_exists(page: Path) -> None:
    broken = []
    for target in MD_LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)} links to what does not exist: {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_results_section_named_exists(page: Path) -> None:
    """`bench/RESULTS.md`, "Title" names a section by the start of its heading (headings may gain a suffix)."""
    headings = [m.group(1) for m in re.finditer(r"^## (.+)$", (REPO / "bench/RESULTS.md").read_text(), re.M)]
    text = " ".join(page.read_text().split())
    titles = [t for m in RESULTS_SECTIONS.finditer(text) for t in re.findall(r"\"([^\"]+)\"", m.group(1))]
    if page.name == "benchmarks.md":  # its table's last column names the sections
        titles += [t for row in text.split("|") for t in re.findall(r"^ \"([^\"]+)\"", row)]
        titles += re.findall(r"\", \"([^\"]+)\"", text)
    unknown = [t for t in titles if not any(h.startswith(t) for h in headings)]
    assert not unknown, f"{page.relative_to(REPO)} names sections bench/RESULTS.md does not have: {unknown}"


def test_every_code_block_says_its_language() -> None:
    for page in PAGES:
        for language, body in blocks(page):
            assert language, f"{page.relative_to(REPO)}: a code block without a language: {body[:60]!r}"


def test_the_readme_package_picture_is_the_enforced_import_graph() -> None:
    tree = ast.parse((REPO / "tests/test_layout.py").read_text())
    (allowed,) = [ast.literal_eval(node.value) for node in tree.body
                  if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "ALLOWED"]  # fmt: skip
    text = README.read_text()
    section = text[text.index("## Where things are") :]
    picture = next(body for language, body in blocks_of_text(section) if language == "text")
    drawn: dict[str, set[str]] = {}
    for line in picture.splitlines():
        m = re.match(r"^([a-z, ]+?) ─+▶ (.+?)(?:\s{2,}.*)?$", line)
        if not m:
            continue
        targets = m.group(2).strip()
        if targets == "every step":
            imports = set(allowed) - {"core"}
        elif targets == "core only":
            imports = set()
        else:
            imports = {t.strip() for t in targets.split("·")}
        for step in m.group(1).split(","):
            drawn[step.strip()] = imports
    expected = {step: set(imports) - {"core", step} for step, imports in allowed.items() if step != "core"}
    for step in drawn:
        drawn[step] -= {step}
    assert drawn == expected, "README's 'Where things are' picture differs from ALLOWED in tests/test_layout.py"
    assert allowed["core"] == set() and "core ◀" in picture


def blocks_of_text(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def test_the_test_command_is_the_one_ci_runs() -> None:
    ci = (REPO / ".ci/run").read_text().strip().splitlines()[-1]
    for page in (README, REPO / "CONTRIBUTING.md"):
        commands = [c for kind, c in steps_of(page) if kind == "shell" and "pytest" in c]
        assert ci in commands, f"{page.name}: the test command is not .ci/run's: {ci}"


# --- running the commands ------------------------------------------------------------------------------------------

LINKED = ("pipeline", "recipes", "bench", "tests", "docs", ".ci", "accelerate_config.yaml", "pyproject.toml",
          "README.md", "CONTRIBUTING.md")  # fmt: skip
WORKERS = 2  # commands run two at a time (see `outcomes`)
MACHINE_RANK = re.compile(r"--machine_rank \d+")
MAIN_PORT = re.compile(r"--main_process_port \d+")
SERVER_URL = re.compile(r"(127\.0\.0\.1|localhost):8000\b")


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A repository copy where the main command has run: reward_model/ holds a (tiny) model the pipeline trained."""
    root = tmp_path_factory.mktemp("clone")
    for name in LINKED:
        if (REPO / name).exists():
            (root / name).symlink_to(REPO / name)
    shutil.copytree(REPO / "data", root / "data", ignore=shutil.ignore_patterns("processed*"))
    (root / "reward_model").mkdir()
    shutil.copy(REPO / "reward_model/.gitignore", root / "reward_model/.gitignore")
    recipe = write_recipe(root.parent / f"{root.name}-recipe.yaml", tiny_model_dir, root / "reward_model",
                          dataset_path=str(root / "data/answers.csv"), max_steps=3, save_strategy="no")  # fmt: skip
    argv = [sys.executable, "pipeline/train.py", "--config", str(recipe)]
    trained = subprocess.run(argv, cwd=REPO, env=environment(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert trained.returncode == 0, trained.stderr[-3000:]
    return root


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Offline, and `python`, `accelerate`, `ruff` are the ones of the interpreter running the tests."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PATH": path, **(extra or {})}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m pipeline.serve ...` as written, on a free port, until stop()."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        argv = shlex.split(command, comments=True)
        argv = [shutil.which(argv[0], path=env["PATH"]) or argv[0], *argv[1:]]
        if "--port" in argv:
            argv[argv.index("--port") + 1] = str(self.port)
        else:
            argv += ["--port", str(self.port)]
        self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT_S)
            except queue.Empty:
                self.process.kill()
                raise AssertionError(f"{command}: not serving after {TIMEOUT_S} s") from None
            if line is None:
                raise AssertionError(f"{command}: exited {self.process.wait()}:\n{''.join(self.output)[-3000:]}")
            if line.startswith("serving "):
                break
        deadline = time.monotonic() + TIMEOUT_S
        while not self.ready():  # "serving ..." comes as the app starts; /health answers once it has
            assert self.process.poll() is None and time.monotonic() < deadline, "".join(self.output)[-3000:]
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as reply:
                return reply.status == 200
        except OSError:
            return False

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def local(self, text: str) -> str:
        """The same text with the documented port 8000 replaced by this server's."""
        return SERVER_URL.sub(rf"\g<1>:{self.port}", text)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=TIMEOUT_S)
        assert code == 0, f"the server exited {code} on SIGTERM:\n{''.join(self.output)[-3000:]}"


def make_placeholders(command: str, cwd: Path) -> None:
    """The files a command names as placeholders (YOUR_*), made from data/answers.csv."""
    import pandas as pd

    ranked = pd.read_csv(cwd / "data/answers.csv")
    prompts = sorted(ranked["prompt"].unique())
    pairs = ranked.merge(ranked, on="prompt", suffixes=("_a", "_b"))
    pairs = pairs[pairs["rank_a"] < pairs["rank_b"]]
    pairs = pd.DataFrame({"question": pairs["prompt"], "chosen": pairs["answer_a"], "rejected": pairs["answer_b"]})
    makers = {
        "YOUR_PAIRS.parquet": lambda path: pairs.to_parquet(path, index=False),
        "YOUR_TEST.jsonl": lambda path: pairs[pairs["question"].isin(prompts[-12:])].to_json(
            path, orient="records", lines=True
        ),
    }
    for name in re.findall(r"\bYOUR_[A-Z_]+\.\w+", command):
        assert name in makers, f"no test file for the placeholder {name}: add one to make_placeholders"
        if not (cwd / name).exists():
            makers[name](cwd / name)


def output_dir_of(argv: list[str], cwd: Path) -> Path:
    if "--output_dir" in argv:
        return cwd / argv[argv.index("--output_dir") + 1]
    recipe = argv[argv.index("--config") + 1]
    line = re.search(r"^output_dir: *(\S+)", (cwd / recipe).read_text(), re.M)
    return cwd / line.group(1)


def run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)  # fmt: skip


def is_training(argv: list[str]) -> bool:
    """`... pipeline/train.py --config ...`, `q2-reward train --config ...`, `... -m pipeline.cli train --config ...`"""
    entry = "pipeline/train.py" in argv or any(
        word in ("q2-reward", "pipeline.cli") and argv[i + 1 : i + 2] == ["train"] for i, word in enumerate(argv)
    )
    return entry and "--config" in argv and "--help" not in argv


def is_server(kind: str, body: str) -> bool:
    return kind == "shell" and body.startswith(("python -m pipeline.serve", "q2-reward serve"))


def plain_command(kind: str, body: str) -> str | None:
    """What to run of a shell line that needs no server and no exported variable; None for any other step."""
    if kind != "shell" or body.startswith("export ") or is_server(kind, body) or SERVER_URL.search(body):
        return None
    if "python -m pytest" in body:  # the line that runs this suite (it is .ci/run's: a test above checks it)
        return None
    command = " && ".join(p.strip() for p in body.split("&&") if not p.strip().startswith("pip install"))
    # One command for all machine ranks of a multi-node command: run_everywhere starts every rank.
    return MACHINE_RANK.sub("--machine_rank 0", command) if machines_of(command) > 1 else command


def machines_of(command: str) -> int:
    argv = shlex.split(command, comments=True)
    return int(argv[argv.index("--num_machines") + 1]) if "--num_machines" in argv else 1


def run_everywhere(command: str, cwd: Path, env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """The command's result; with `--num_machines N` (N > 1), those of its N machine ranks, started together (each
    waits for the others) on a free port."""
    machines = machines_of(command)
    if machines == 1:
        return [run(command, cwd, env)]
    command = MAIN_PORT.sub(f"--main_process_port {free_port()}", command)
    ranks = [MACHINE_RANK.sub(f"--machine_rank {rank}", command) for rank in range(machines)]
    with ThreadPoolExecutor(max_workers=machines) as pool:
        return list(pool.map(lambda each: run(each, cwd, env), ranks))


def run_plain(command: str, cwd: Path, env: dict[str, str]) -> str:
    """Runs one command as written (training: where its output_dir holds a model); returns what it did."""
    make_placeholders(command, cwd)
    argv = shlex.split(command, comments=True)
    if not is_training(argv):
        for result in run_everywhere(command, cwd, env):
            assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        return "ran"
    if "deepspeed" in command and importlib.util.find_spec("deepspeed") is None:
        return "skipped: no deepspeed"  # needs `pip install deepspeed` and GPUs (see the module docstring)
    output_dir = output_dir_of(argv, cwd)
    if not (output_dir / "config.json").exists():
        shutil.copytree(cwd / "reward_model", output_dir, dirs_exist_ok=True)
    refusal = f"error: output_dir {output_dir.resolve()} already holds a trained model"
    for result in run_everywhere(command, cwd, env):  # every machine rank stops with the main one's refusal
        assert result.returncode != 0 and refusal in result.stderr, f"{command}\n{result.stderr[-3000:]}"
    return "stopped before training"


def output_key(command: str, cwd: Path) -> str:
    """Commands that write (or lock) the same output share a key and run one after another."""
    argv = shlex.split(command, comments=True)
    if is_training(argv):
        return str(output_dir_of(argv, cwd))
    for flag in ("--output", "--output_dir"):
        if flag in argv:
            return str(cwd / argv[argv.index(flag) + 1])
    return command


@pytest.fixture(scope="module")
def outcomes(clone: Path) -> dict[str, str]:
    """Every plain command of every page (those before the page's first `export`), each once, two at a time: most of
    a command's time is one core importing torch and transformers, so two share a 2-core machine well."""
    commands: list[str] = []
    for page in PAGES:
        for kind, body in steps_of(page):
            if kind == "shell" and body.startswith("export "):
                break
            command = plain_command(kind, body)
            if command is not None and command not in commands:
                commands.append(command)
                make_placeholders(command, clone)
    groups: dict[str, list[str]] = {}
    for command in commands:
        groups.setdefault(output_key(command, clone), []).append(command)
    results: dict[str, str] = {}

    def run_group(group: list[str]) -> None:
        for command in group:
            started = time.monotonic()
            try:
                what = run_plain(command, clone, environment())
            except (AssertionError, subprocess.TimeoutExpired) as error:
                what = f"FAILED: {error}"
            results[command] = f"{what} ({time.monotonic() - started:.1f} s)"

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(run_group, groups.values()))
    return results


def run_snippet(body: str, page: Path, cwd: Path) -> str:
    if "GRPOTrainer" in body and page == README:
        return "covered by tests/score/test_reward_function.py"
    previous = Path.cwd()
    os.chdir(cwd)  # in this process, as tests/score/test_reward_function.py runs the GRPO example
    try:
        exec(compile(body, str(page), "exec"), {"__name__": "__main__"})
    finally:
        os.chdir(previous)
    return "ran"


def run_client(body: str, page: Path, cwd: Path, env: dict[str, str], server: Server | None) -> str:
    """A command that calls the server started before it on the page (curl, or Python with requests)."""
    assert server is not None, f"{page.name}: {body!r} needs a server started before it on the page"
    if not body.startswith("curl "):
        return run_snippet(server.local(body), page, cwd)
    result = run(server.local(body), cwd, env)
    assert result.returncode == 0, f"{body}\n{result.stderr[-3000:]}"
    reply = json.loads(result.stdout)
    assert "detail" not in reply, f"{body}: {reply}"
    return "ran"


def run_page_step(kind: str, body: str, page: Path, cwd: Path, env: dict[str, str], outcomes: dict[str, str],
                  server: Server | None) -> str:  # fmt: skip
    if SERVER_URL.search(body):
        return run_client(body, page, cwd, env, server)
    if kind == "python":
        return run_snippet(body, page, cwd)
    command = plain_command(kind, body)
    if command is None:
        return "this suite"
    if command not in outcomes:  # after an `export` on its page: here, with that environment
        outcomes[command] = run_plain(command, cwd, env)
    assert not outcomes[command].startswith("FAILED"), f"{page.name}: {outcomes[command]}"
    return outcomes[command]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_runs_as_written(page: Path, clone: Path, outcomes: dict[str, str]) -> None:
    env = environment()
    for program in ("curl", "openssl"):
        if any(program in body for _, body in steps_of(page)) and shutil.which(program) is None:
            pytest.skip(f"{program} is not installed")
    server: Server | None = None
    try:
        for kind, body in steps_of(page):
            started, what = time.monotonic(), "ran"
            if kind == "shell" and body.startswith("export "):
                exported = run(f"{body}\nenv -0", clone, env)
                assert exported.returncode == 0, exported.stderr
                env = dict(item.split("=", 1) for item in exported.stdout.split("\0") if "=" in item)
            elif is_server(kind, body):
                if server is not None:
                    server.stop()
                server = Server(body, clone, env)
            else:
                what = run_page_step(kind, body, page, clone, env, outcomes, server)
            print(f"{time.monotonic() - started:6.1f} s  {what:<36.36}  {' '.join(body.split())[:70]}")
    finally:
        if server is not None and server.process.poll() is None:
            server.stop()
