"""The real server (uvicorn) on an ephemeral loopback port, in a thread, around scorers the tests can watch and hold."""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import PAIRS, WORDS

from pipeline.model.scorer import RewardScorer
from pipeline.serve.app import Settings, create_app
from pipeline.serve.batcher import Batcher

REWARD_MEAN, REWARD_STD = 0.25, 2.0


class Gate:
    """A RewardScorer that records each `score_ids` call (the rows' lengths) and can hold calls until opened."""

    def __init__(self, scorer: RewardScorer) -> None:
        self.scorer = scorer
        self.calls: list[list[int]] = []
        self.opened = threading.Event()
        self.opened.set()
        self.entered = threading.Event()
        self.fail_length: int | None = None  # a call with a row of this many tokens raises

    def __getattr__(self, name: str) -> Any:
        return getattr(self.scorer, name)

    def hold(self) -> None:
        self.opened.clear()
        self.entered.clear()

    def score_ids(self, input_ids, **kwargs) -> np.ndarray:
        self.calls.append([len(ids) for ids in input_ids])
        self.entered.set()
        assert self.opened.wait(30), "a held call was never released"
        if self.fail_length is not None and any(len(ids) == self.fail_length for ids in input_ids):
            raise RuntimeError("CUDA out of memory (simulated)")
        return self.scorer.score_ids(input_ids, **kwargs)


class Server:
    """uvicorn serving the app on 127.0.0.1, port chosen by the OS, in a daemon thread; stopped by `stop()`."""

    def __init__(self, batcher: Batcher, settings: Settings) -> None:
        import uvicorn

        self.batcher = batcher
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(batcher, settings), log_level="warning", access_log=False, timeout_graceful_shutdown=10
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()
        assert not self.thread.is_alive()


@pytest.fixture(scope="session")
def scorer(tiny_model_dir: Path) -> RewardScorer:
    return RewardScorer.from_pretrained(tiny_model_dir, device="cpu")


@pytest.fixture(scope="session")
def stats_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with reward_mean/reward_std in its config.json, as training stores them."""
    target = tmp_path_factory.mktemp("stats") / "model"
    shutil.copytree(tiny_model_dir, target)
    config = json.loads((target / "config.json").read_text())
    (target / "config.json").write_text(json.dumps({**config, "reward_mean": REWARD_MEAN, "reward_std": REWARD_STD}))
    return target


@pytest.fixture(scope="session")
def serve():
    """serve(scorers, max_queue_pairs=..., max_wait_s=..., **settings) -> a started Server; all stop at the end."""
    started: list[Server] = []

    def start(scorers: list, *, max_queue_pairs: int = 4096, max_wait_s: float = 0.005, **settings: Any) -> Server:
        batcher = Batcher(scorers, max_queue_pairs=max_queue_pairs, max_wait_s=max_wait_s)
        settings = {"model": "tiny", "max_pairs": 256, "max_body_bytes": 256 * 1024, **settings}
        server = Server(batcher, Settings(**settings)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        with contextlib.suppress(AssertionError):
            server.stop()


def _random_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n pairs of varied lengths: the shared PAIRS (one over 512 tokens) and random word salads."""
    pairs = []
    for _ in range(n):
        if rng.random() < 0.3:
            pairs.append(rng.choice(PAIRS))
        else:
            prompt = " ".join(rng.choices(WORDS, k=rng.randint(0, 40)))
            pairs.append((prompt, " ".join(rng.choices(WORDS, k=rng.randint(1, 120)))))
    return pairs


@pytest.fixture(scope="session")
def random_pairs():
    """random_pairs(rng, n): n (prompt, response) pairs of varied lengths, one in ~20 over 512 tokens."""
    return _random_pairs


@pytest.fixture(scope="session")
def gated(scorer: RewardScorer):
    """gated(other=None): a Gate around the shared tiny scorer (or another)."""
    return lambda other=None: Gate(other or scorer)
