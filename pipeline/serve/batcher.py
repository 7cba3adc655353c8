"""Dynamic batching: the pairs of many requests, from many clients, scored together in token-budget batches by one
`RewardScorer` replica per device.

A request is admitted (or refused: the queue is full), encoded with the training encoding in the encoder thread,
then queued. Each replica, when free, takes the queued requests in arrival order (waiting up to `max_wait_s` for
more unless a full batch is already there, and taking at most `group_tokens` tokens) and scores them in one
`score_ids` call in its own thread, so the event loop never waits for the model. A request's scores depend only on
its own tokens (each row of a batch is masked from the others), so batching changes them by float rounding only.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from typing_extensions import override

from pipeline.model.scorer import RewardScorer

# Tokens one replica takes at a time, in units of its per-forward budget: enough to sort by length and pad little,
# few enough that the first request of a group does not wait long for the last.
GROUP_BATCHES = 8
RETRY_AFTER_MAX_S = 60


class QueueFull(Exception):
    """The server holds as many pairs as it may: the client should retry after `retry_after` seconds."""

    @override
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy; retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass(eq=False)
class _Job:
    input_ids: list[list[int]]
    future: asyncio.Future
    tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = sum(len(ids) for ids in self.input_ids)


class Batcher:
    """Scores requests' pairs through `scorers` (one per device, same model), batching across requests.

    `max_queue_pairs` bounds the pairs admitted and not yet answered (encoding, queued or being scored); beyond it
    `score` raises QueueFull at once. Use inside a running event loop: `await start()`, then `score`, then `close()`.
    """

    def __init__(
        self,
        scorers: Sequence[RewardScorer],
        *,
        max_queue_pairs: int,
        max_wait_s: float,
        group_tokens: int | None = None,
    ) -> None:
        if not scorers:
            raise ValueError("at least one scorer")
        self.scorers = list(scorers)
        self.max_queue_pairs = max_queue_pairs
        self.max_wait_s = max_wait_s
        self.group_tokens = group_tokens
        self.admitted_pairs = 0  # admitted, not yet answered
        self.in_flight = 0  # requests admitted, not yet answered
        self.scored_pairs = 0
        self._busy_s = 0.0
        self._jobs: deque[_Job] = deque()
        self._queued_tokens = 0
        self._arrived: asyncio.Event | None = None
        self._closing = False
        self._tasks: list[asyncio.Task] = []
        # The tokenizer changes its own truncation settings per call: one thread encodes, so calls never interleave.
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="q2-encode")
        self._replicas = [ThreadPoolExecutor(1, thread_name_prefix=f"q2-replica-{i}") for i in range(len(scorers))]

    @property
    def queued_pairs(self) -> int:
        return sum(len(job.input_ids) for job in self._jobs)

    async def start(self) -> None:
        self._arrived = asyncio.Event()
        self._tasks = [asyncio.create_task(self._serve(i)) for i in range(len(self.scorers))]

    async def close(self) -> None:
        """Score what is queued, then stop the replicas."""
        self._closing = True
        if self._arrived is not None:
            self._arrived.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for executor in [self._encoder, *self._replicas]:
            executor.shutdown(wait=False)

    def retry_after(self) -> int:
        """Seconds until the admitted pairs are likely scored, from the throughput measured so far."""
        rate = self.scored_pairs / self._busy_s * len(self.scorers) if self._busy_s > 0 else 0.0
        seconds = self.admitted_pairs / rate if rate > 0 else 1
        return int(min(RETRY_AFTER_MAX_S, max(1, math.ceil(seconds))))

    async def score(self, prompts: Sequence[str], responses: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Scores (float64) and truncation flags of one request's pairs, in order; QueueFull when no room."""
        n = len(prompts)
        if self.admitted_pairs + n > self.max_queue_pairs:
            raise QueueFull(self.retry_after())
        self.admitted_pairs += n
        self.in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            encoded = await loop.run_in_executor(self._encoder, self.scorers[0].encode, prompts, responses)
            truncated = np.asarray(encoded.truncated, dtype=bool)
            if n == 0:
                return np.empty(0, dtype=np.float64), truncated
            job = _Job(encoded.input_ids, loop.create_future())
            self._jobs.append(job)
            self._queued_tokens += job.tokens
            self._arrived.set()
            return await job.future, truncated
        finally:
            self.admitted_pairs -= n
            self.in_flight -= 1

    async def _serve(self, index: int) -> None:
        scorer, executor = self.scorers[index], self._replicas[index]
        limit = self.group_tokens or scorer.max_tokens * GROUP_BATCHES
        while (group := await self._take(scorer.max_tokens, limit)) is not None:
            await self._score_group(group, scorer, executor)

    async def _take(self, full: int, limit: int) -> list[_Job] | None:
        """The next requests for a replica, oldest first (None once closing with nothing queued)."""
        loop = asyncio.get_running_loop()
        while True:
            while not self._jobs:
                if self._closing:
                    return None
                self._arrived.clear()
                await self._arrived.wait()
            # Give other clients' requests a moment to join, unless a full batch is already waiting.
            deadline = loop.time() + self.max_wait_s
            while self._queued_tokens < full and not self._closing and (remaining := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            group, tokens = [], 0
            while self._jobs and (not group or tokens + self._jobs[0].tokens <= limit):
                job = self._jobs.popleft()
                self._queued_tokens -= job.tokens
                if not job.future.done():  # done: its client went away (the request was cancelled)
                    group.append(job)
                    tokens += job.tokens
            if group:
                return group

    async def _score_group(self, group: list[_Job], scorer: RewardScorer, executor: ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        input_ids = [ids for job in group for ids in job.input_ids]
        start = time.perf_counter()
        try:
            scores = await loop.run_in_executor(executor, scorer.score_ids, input_ids)
        except Exception as err:
            if len(group) > 1:  # one request's failure must not fail the others: score each alone
                for job in group:
                    await self._score_group([job], scorer, executor)
            elif not group[0].future.done():
                group[0].future.set_exception(err)
            return
        self._busy_s += time.perf_counter() - start
        self.scored_pairs += len(input_ids)
        offset = 0
        for job in group:
            if not job.future.done():
                job.future.set_result(scores[offset : offset + len(job.input_ids)])
            offset += len(job.input_ids)
