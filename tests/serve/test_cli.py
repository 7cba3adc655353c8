"""`python -m pipeline.serve`: flags checked before the model loads (one `error:` line, exit 2), and a real server
process that SIGTERM stops gracefully: requests in flight complete, new connections are refused, exit code 0."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import PAIRS, REPO

from pipeline.serve.cli import main

KEY = "s1gterm-test-key-never-printed"


def run_main(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after any progress bar of the model loading
    assert err.startswith("error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "70000"], "--port must be 0-65535 (got 70000)"),
        (["--port", "eight"], "argument --port: invalid int value: 'eight'"),
        (["--max_pairs", "0"], "--max_pairs must be at least 1 (got 0)"),
        (["--max_queue_pairs", "-3"], "--max_queue_pairs must be at least 1"),
        (["--max_pairs", "100", "--max_queue_pairs", "50"], "could never be admitted"),
        (["--max_wait_ms", "nan"], "--max_wait_ms must be a number >= 0"),
        (["--max_body_mb", "-1"], "--max_body_mb must be a number >= 0"),
        (["--max_body_mb", "0"], "--max_body_mb 0.0 is less than a byte"),
        (["--precision", "fp64"], "argument --precision: invalid choice: 'fp64'"),
        (["--max_pair", "3"], "unrecognized arguments: --max_pair 3"),  # no abbreviations
        (["--api_key_env", "Q2_SERVE_TEST_UNSET"], "the environment variable Q2_SERVE_TEST_UNSET is not set or empty"),
        (["--host", "192.0.2.1"], "cannot listen on 192.0.2.1:"),  # TEST-NET: not an address of this machine
        (["--devices", "cuda:0"], "device 'cuda:0' was asked for but no CUDA GPU is available"),
        (["--devices", "cpu,"], "--devices 'cpu,': an empty entry"),
        (["--devices", "tpu"], "device must be auto, cpu, cuda or cuda:N (got 'tpu')"),
        (
            ["--max_length", "100000"],
            ("--max_length 100000 is above what the model ", "can read (512 tokens); use at most 512"),
        ),
        (["--standardize"], "the model has no reward_mean/reward_std"),
    ],
)
def test_bad_flags_are_one_line_before_serving(capsys, tiny_model_dir: Path, flags, message) -> None:
    if "cuda" in " ".join(flags) and __import__("torch").cuda.is_available():
        pytest.skip("a GPU is present")
    err = run_main(capsys, "--model", str(tiny_model_dir), "--port", "0", *flags)
    parts = message if isinstance(message, tuple) else (message,)  # around the model's path
    assert all(part in err for part in parts), err


def test_a_missing_model_or_a_port_in_use_is_one_line(capsys, tmp_path: Path, tiny_model_dir: Path) -> None:
    assert "is not a local folder" in run_main(capsys, "--model", str(tmp_path / "nope"), "--port", "0")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = run_main(capsys, "--model", str(tiny_model_dir), "--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port}" in err and "pick another --port" in err


def test_sigterm_finishes_requests_in_flight_then_exits_0(tiny_model_dir: Path, scorer) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "Q2_REWARD_API_KEY": KEY}
    # Requests wait up to 3 s for others to join their batch: they are in flight when SIGTERM comes.
    command = [sys.executable, "-m", "pipeline.serve", "--model", str(tiny_model_dir), "--port", "0",
               "--max_wait_ms", "3000", "--log_level", "info"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url, serving = read_url(process)
        auth = {"Authorization": f"Bearer {KEY}"}
        wait_ready(url)
        body = {"prompts": [p for p, _ in PAIRS], "responses": [r for _, r in PAIRS]}
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(httpx.post, url + "/score", json=body, headers=auth, timeout=60) for _ in range(3)]
            deadline = time.monotonic() + 30
            while httpx.get(url + "/health", timeout=10).json()["in_flight_requests"] < 3:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.ConnectError):  # stopped accepting
                httpx.get(url + "/health", timeout=5)
            answers = [f.result() for f in futures]
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read()
    assert [a.status_code for a in answers] == [200] * 3
    expected = scorer.score([p for p, _ in PAIRS], [r for _, r in PAIRS])
    for answer in answers:
        np.testing.assert_allclose(answer.json()["scores"], expected, atol=1e-6, rtol=0)
    assert "bearer key from $Q2_REWARD_API_KEY" in serving and KEY not in serving
    assert "Traceback" not in stderr and KEY not in stderr and "Finished server process" in stderr


def read_url(process: subprocess.Popen) -> tuple[str, str]:
    """The URL of the `serving ... on http://...` line (the port was chosen by the OS), and the line."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line and process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        if match := re.search(r"serving .* on (http://127\.0\.0\.1:\d+) ", line):
            return match.group(1), line
    raise AssertionError("no 'serving' line")


def wait_ready(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("the server never answered /health")
