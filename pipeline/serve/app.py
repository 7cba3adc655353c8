"""The HTTP API (FastAPI): `POST /score`, OpenRLHF's `POST /get_reward`, `GET /health`.

Each request is checked in this order, and refused at the first problem: the bearer key (401), the body size (413,
before the body is read where Content-Length says so), the JSON and its fields (422, naming the field and index),
the pairs per request (413), room in the queue (503 with Retry-After). Then its pairs are scored by the batcher.
"""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from pipeline.core.errors import UserError, one_line
from pipeline.serve.batcher import Batcher, QueueFull
from pipeline.serve.payloads import Pairs, Problem, reward_pairs, score_pairs

T = TypeVar("T")


@dataclass
class Settings:
    model: str  # as the user named it (never a resolved cache path)
    max_pairs: int = 4096
    max_body_bytes: int = 32 * 2**20
    api_key: str | None = None  # None: no key asked for
    standardize_rewards: bool = False  # /get_reward returns standardised scores


def create_app(batcher: Batcher, settings: Settings) -> FastAPI:
    """The app: the batcher starts with it and closes after the last request; its routes and error replies."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.close()  # uvicorn has let the requests in flight finish by now

    app = FastAPI(title="q2-reward", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    _add_error_replies(app)
    _add_health(app, batcher, settings)
    _add_scoring_routes(app, batcher, settings)
    return app


def _add_error_replies(app: FastAPI) -> None:
    """The reply to each refusal or failure: 401/413/422 (`Problem`), 503 (queue full), 499 (client gone), 500."""

    @app.exception_handler(Problem)
    async def refused(request: Request, err: Problem) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return JSONResponse(err.body(), status_code=err.status, headers=headers)

    @app.exception_handler(QueueFull)
    async def busy(request: Request, err: QueueFull) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=503, headers={"Retry-After": str(err.retry_after)})

    @app.exception_handler(ClientGone)
    async def gone(request: Request, err: ClientGone) -> JSONResponse:  # nobody reads it; 499 as nginx logs it
        return JSONResponse({"detail": "the client closed the connection"}, status_code=499)

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:  # logged with its traceback by the server
        return JSONResponse({"detail": f"scoring failed: {one_line(err, 300, with_type=True)}"}, status_code=500)


def _add_health(app: FastAPI, batcher: Batcher, settings: Settings) -> None:
    """`GET /health`: the model, its devices and precision, and the queue."""
    scorer = batcher.scorers[0]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": settings.model,
            "devices": [str(s.device) for s in batcher.scorers],
            "precision": [s.precision for s in batcher.scorers],
            "max_length": scorer.max_length,
            "queue_pairs": batcher.admitted_pairs,
            "in_flight_requests": batcher.in_flight,
            "max_queue_pairs": batcher.max_queue_pairs,
            "max_pairs": settings.max_pairs,
            "auth": settings.api_key is not None,
        }


def _add_scoring_routes(app: FastAPI, batcher: Batcher, settings: Settings) -> None:
    """`POST /score` and OpenRLHF's `POST /get_reward`, which check and score a request the same way."""
    scorer = batcher.scorers[0]

    async def scored(request: Request, parse: Callable[[bytes, int], Pairs]) -> tuple[Pairs, np.ndarray, np.ndarray]:
        check_key(request, settings.api_key)
        raw = await read_body(request, settings.max_body_bytes)
        pairs = await asyncio.to_thread(parse, raw, settings.max_pairs)  # a large body parses off the event loop
        if pairs.standardize and scorer.reward_stats is None:
            try:
                scorer.standardize(np.empty(0))
            except UserError as err:
                raise Problem(422, one_line(err), ("body", "standardize")) from err
        scores, truncated = await unless_gone(request, batcher.score(pairs.prompts, pairs.responses))
        if pairs.standardize:
            scores = scorer.standardize(scores)
        return pairs, scores, truncated

    @app.post("/score")
    async def score(request: Request) -> dict[str, Any]:
        """{"prompts": [...], "responses": [...], "standardize": false} -> {"scores": [...], "truncated": [...]}"""
        _, scores, truncated = await scored(request, score_pairs)
        return {"scores": as_json(scores), "truncated": truncated.tolist()}

    @app.post("/get_reward")
    async def get_reward(request: Request) -> dict[str, Any]:
        """OpenRLHF's remote reward model: {"query": [...], "prompts": [...], "labels": [...]} -> {"rewards": [...],
        "scores": [...], "extra_logs": {...}} (extra_logs: one value per query, which OpenRLHF logs as means)."""
        _, scores, truncated = await scored(request, reward_pairs)
        if settings.standardize_rewards:
            scores = scorer.standardize(scores)
        rewards = as_json(scores)
        return {"rewards": rewards, "scores": rewards, "extra_logs": {"truncated": truncated.astype(float).tolist()}}


class ClientGone(Exception):
    """The client closed its connection before its scores were ready (say, its timeout passed)."""


async def unless_gone(request: Request, scoring: Coroutine[Any, Any, T]) -> T:
    """The result of `scoring`, which is cancelled if the client disconnects first: its pairs are then not scored
    (a client that times out and retries would otherwise have its work done twice, under the very load that
    made it time out)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":  # the body is read: only a disconnect comes
            pass

    task, watch = asyncio.ensure_future(scoring), asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        raise ClientGone
    return task.result()


def check_key(request: Request, key: str | None) -> None:
    """`Authorization: Bearer <key>` when a key is set; compared in constant time, never echoed."""
    if key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise Problem(401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'", None)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Problem(413, too_large(limit), None)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, too_large(limit), None)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> str:
    return f"the body is over {limit} bytes (--max_body_mb): send fewer pairs per request"


def as_json(scores: np.ndarray) -> list[float | None]:
    """Floats for JSON; a non-finite score (which JSON cannot hold) as null."""
    return [float(x) if math.isfinite(x) else None for x in scores]
