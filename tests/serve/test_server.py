"""The HTTP server, real (uvicorn on a loopback port): scores equal RewardScorer's, batching across clients, replicas,
OpenRLHF's /get_reward, limits, validation, backpressure, auth, and requests that cannot hurt each other."""

from __future__ import annotations

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import LONG_PROMPT, PAIRS

from pipeline.data.conversation import pair_text
from pipeline.model.scorer import RewardScorer

TOL = 1e-6
KEY = "k3y-Th4t-must-n0t-leak"


@pytest.fixture(scope="module")
def stats_scorer(stats_model_dir: Path) -> RewardScorer:
    return RewardScorer.from_pretrained(stats_model_dir, device="cpu")


@pytest.fixture(scope="module")
def server(serve, gated, stats_scorer):
    """The main server: the tiny model with reward statistics, one watched replica, small limits."""
    gate = gated(stats_scorer)
    return serve([gate], max_wait_s=0.02, max_pairs=64, max_body_bytes=64 * 1024), gate


def post(url: str, path: str, body: object, **kwargs) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=60, **kwargs)


def body_of(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    return {"prompts": [p for p, _ in pairs], "responses": [r for _, r in pairs]}


def alone(scorer: RewardScorer, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The scores RewardScorer gives these pairs, scored by themselves."""
    return scorer.score([p for p, _ in pairs], [r for _, r in pairs])


def test_concurrent_clients_get_the_scores_of_rewardscorer_alone(server, stats_scorer, random_pairs) -> None:
    srv, _ = server
    rng = random.Random(0)
    requests = [random_pairs(rng, rng.randint(1, 24)) for _ in range(48)]

    def client(pairs):
        response = post(srv.url, "/score", {"prompts": [p for p, _ in pairs], "responses": [r for _, r in pairs]})
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(16) as pool:  # 16 concurrent clients
        answers = list(pool.map(client, requests))
    for pairs, answer in zip(requests, answers, strict=True):
        np.testing.assert_allclose(answer["scores"], alone(stats_scorer, pairs), atol=TOL, rtol=0)
        assert answer["truncated"] == [p == LONG_PROMPT for p, _ in pairs]


def test_requests_waiting_together_are_scored_in_one_batch_with_unchanged_scores(server, stats_scorer) -> None:
    srv, gate = server
    gate.hold()
    first = [PAIRS[0]]
    others = [PAIRS[1:3], PAIRS[3:5], PAIRS[5:7]]
    calls_before = len(gate.calls)
    with ThreadPoolExecutor(4) as pool:
        held = pool.submit(post, srv.url, "/score", body_of(first))
        assert gate.entered.wait(30)  # the replica is busy with the first request
        waiting = [pool.submit(post, srv.url, "/score", body_of(pairs)) for pairs in others]
        until(lambda: srv.batcher.queued_pairs == 6)
        gate.opened.set()
        answers = [f.result().json()["scores"] for f in [held, *waiting]]
    assert [len(c) for c in gate.calls[calls_before:]] == [1, 6]  # the three waiting requests: one score_ids call
    for pairs, scores in zip([first, *others], answers, strict=True):
        np.testing.assert_allclose(scores, alone(stats_scorer, pairs), atol=TOL, rtol=0)


def test_two_cpu_replicas_share_the_requests(serve, gated, tiny_model_dir, scorer) -> None:
    first, second = gated(), gated(RewardScorer.from_pretrained(tiny_model_dir, device="cpu"))
    srv = serve([first, second])
    first.hold()
    second.hold()
    body = {"prompts": [p for p, _ in PAIRS], "responses": [r for _, r in PAIRS]}
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(post, srv.url, "/score", body)]
        until(lambda: first.entered.is_set() or second.entered.is_set())
        futures.append(pool.submit(post, srv.url, "/score", body))
        assert first.entered.wait(30) and second.entered.wait(30)  # each replica holds one request
        first.opened.set()
        second.opened.set()
        for future in futures:
            np.testing.assert_allclose(future.result().json()["scores"], alone(scorer, PAIRS), atol=TOL, rtol=0)
    assert srv.batcher.admitted_pairs == 0
    health = httpx.get(srv.url + "/health").json()
    assert health["devices"] == ["cpu", "cpu"] and health["precision"] == ["fp32", "fp32"]


def test_get_reward_answers_openrlhf_exact_request(server, stats_scorer) -> None:
    srv, _ = server
    prompts = ["<|im_start|>user\nwhy is the sky blue<|im_end|>\n<|im_start|>assistant\n", "Human: hi\n\nAssistant:"]
    responses = ["because of light<|im_end|>", " hello there"]
    payload = {"query": [p + r for p, r in zip(prompts, responses, strict=True)], "prompts": prompts,
               "labels": ["", None]}  # fmt: skip
    # As OpenRLHF's request_api_wrapper sends it: requests.post(url, json=data, headers=..., timeout=180).
    response = httpx.post(srv.url + "/get_reward", json=payload, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"rewards", "scores", "extra_logs"}
    assert answer["rewards"] == answer["scores"]
    np.testing.assert_allclose(
        answer["rewards"], alone(stats_scorer, list(zip(prompts, responses, strict=True))), atol=TOL, rtol=0
    )
    assert answer["extra_logs"] == {"truncated": [0.0, 0.0]}


@pytest.mark.parametrize(
    ("payload", "loc", "message"),
    [
        ({"query": ["hello", "bye now"], "prompts": ["hello", "hi"]}, ["body", "query", 1], "does not start with"),
        ({"query": ["hello"]}, ["body", "prompts"], "field required"),
        ({"query": ["hello"], "prompts": []}, ["body"], "1 queries but 0 prompts"),
        ({"query": "hello", "prompts": ["hello"]}, ["body", "query"], "must be a list, not a string"),
        ({"query": ["hello", 5], "prompts": ["h", "h"]}, ["body", "query", 1], "must be a string, not a number"),
        ({"query": ["hello"], "prompts": [None]}, ["body", "prompts", 0], "must be a string, not null"),
        ({"prompts": ["hello"]}, ["body", "query"], "field required"),
    ],
)
def test_get_reward_refuses_bad_requests_naming_the_index(server, payload, loc, message) -> None:
    response = post(server[0].url, "/get_reward", payload)
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == loc and message in problem["msg"]


def test_conversational_messages_score_as_the_rl_reward_function_renders_them(server, stats_scorer) -> None:
    prompt = [{"role": "user", "content": "why is the sky blue"}, {"role": "assistant", "content": "light"},
              {"role": "user", "content": "what about red"}]  # fmt: skip
    completion = [
        {"role": "assistant", "content": [{"type": "text", "text": "because "}, {"type": "text", "text": "x"}]}
    ]
    response = post(server[0].url, "/score", {"prompts": [prompt, "plain"], "responses": [completion, "text"]})
    expected = alone(stats_scorer, [pair_text(prompt, completion, "test"), ("plain", "text")])
    np.testing.assert_allclose(response.json()["scores"], expected, atol=TOL, rtol=0)


def test_standardize_uses_the_models_reward_statistics(server, stats_scorer) -> None:
    body = {"prompts": ["a", "b"], "responses": ["good answer", "bad"], "standardize": True}
    scores = post(server[0].url, "/score", body).json()["scores"]
    raw = alone(stats_scorer, [("a", "good answer"), ("b", "bad")])
    np.testing.assert_allclose(scores, (raw - 0.25) / 2.0, atol=TOL, rtol=0)


BAD_SCORE_REQUESTS = [
    (b'{"prompts": ["a"], "responses": ', ["body"], "invalid JSON"),
    (b"\xff\xfe{}", ["body"], "invalid JSON"),
    (b"[1, 2]", ["body"], "must be a JSON object, not a list"),
    (b'"text"', ["body"], "must be a JSON object, not a string"),
    (b"[" * 10_000 + b"]" * 10_000, ["body"], "invalid JSON"),  # deeper than Python's recursion limit
    (b'{"responses": ["a"]}', ["body", "prompts"], "field required"),
    (b'{"prompts": ["a"]}', ["body", "responses"], "field required"),
    (b'{"prompts": "a", "responses": ["b"]}', ["body", "prompts"], "must be a list, not a string"),
    (b'{"prompts": {"a": 1}, "responses": ["b"]}', ["body", "prompts"], "must be a list, not an object"),
    (b'{"prompts": ["a", 3], "responses": ["b", "c"]}', ["body", "prompts", 1], "expected text or a list of"),
    (b'{"prompts": ["a"], "responses": [null]}', ["body", "responses", 0], "expected text or a list of"),
    (b'{"prompts": [[]], "responses": ["b"]}', ["body", "prompts", 0], "the conversation is empty"),
    (b'{"prompts": [[{"content": "x"}]], "responses": ["b"]}', ["body", "prompts", 0], "message 1 has no 'role'"),
    (
        b'{"prompts": ["a"], "responses": [[{"role": "assistant", "content": 3}]]}',
        ["body", "responses", 0],
        "has a int content",
    ),  # fmt: skip
    (b'{"prompts": ["a", "b"], "responses": ["c"]}', ["body"], "2 prompts but 1 responses"),
    (b'{"prompts": ["a"], "responses": ["b"], "standardise": true}', ["body", "standardise"], "unknown field"),
    (b'{"prompts": ["a"], "responses": ["b"], "standardize": "yes"}', ["body", "standardize"], "true or false"),
    (b'{"prompts": ["\\ud800"], "responses": ["b"]}', ["body", "prompts", 0], "lone surrogate"),
    (b'{"prompts": [1e999999], "responses": ["b"]}', ["body", "prompts", 0], "expected text"),
    (b'{"prompts": [' + b"1" * 5000 + b'], "responses": ["b"]}', ["body"], "invalid JSON"),
]


@pytest.mark.parametrize(("raw", "loc", "message"), BAD_SCORE_REQUESTS, ids=lambda v: str(v)[:40])
def test_malformed_requests_are_422_naming_the_field(server, raw: bytes, loc, message) -> None:
    response = httpx.post(server[0].url + "/score", content=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    (problem,) = response.json()["detail"]
    assert problem["loc"] == loc and message in problem["msg"], problem
    assert "\n" not in problem["msg"] and "Traceback" not in response.text


def test_oversize_bodies_and_too_many_pairs_are_413(server) -> None:
    url = server[0].url + "/score"
    big = json.dumps({"prompts": ["x" * 70_000], "responses": ["y"]}).encode()
    assert httpx.post(url, content=big).status_code == 413  # Content-Length over the limit: refused unread

    def chunks():  # no Content-Length: refused once the bytes read pass the limit
        yield b'{"prompts": ["'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"], "responses": ["y"]}'

    response = httpx.post(url, content=chunks())
    assert response.status_code == 413 and "--max_body_mb" in response.json()["detail"]
    response = post(server[0].url, "/score", {"prompts": ["a"] * 65, "responses": ["b"] * 65})
    assert response.status_code == 413
    assert response.json()["detail"][0]["loc"] == ["body", "prompts"] and "at most 64" in response.text


def test_a_full_queue_answers_503_with_retry_after(serve, gated, scorer) -> None:
    gate = gated()
    srv = serve([gate], max_queue_pairs=8, max_pairs=8)
    gate.hold()
    body = {"prompts": ["a"] * 8, "responses": ["b"] * 8}
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(post, srv.url, "/score", body)
        assert gate.entered.wait(30)
        refused = post(srv.url, "/score", {"prompts": ["a"], "responses": ["b"]})
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        assert httpx.get(srv.url + "/health").json()["queue_pairs"] == 8
        gate.opened.set()
        np.testing.assert_allclose(held.result().json()["scores"], alone(scorer, [("a", "b")] * 8), atol=TOL, rtol=0)
    assert post(srv.url, "/score", {"prompts": ["a"], "responses": ["b"]}).status_code == 200  # room again


def test_the_bearer_key_is_required_and_never_echoed(serve, scorer) -> None:
    srv = serve([scorer], api_key=KEY)
    body = {"prompts": ["a"], "responses": ["b"]}
    for headers in ({}, {"Authorization": "Bearer wrong-" + KEY}, {"Authorization": KEY}, {"Authorization": "Basic x"}):
        for path in ("/score", "/get_reward"):
            response = post(srv.url, path, body, headers=headers)
            assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
            assert KEY not in response.text
    ok = post(srv.url, "/score", body, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200
    health = httpx.get(srv.url + "/health")  # readiness probes need no key, and learn nothing of it
    assert health.status_code == 200 and health.json()["auth"] is True and KEY not in health.text
    # Without reward statistics in the model, standardize is refused naming the field.
    refused = post(srv.url, "/score", {**body, "standardize": True}, headers={"Authorization": f"Bearer {KEY}"})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "standardize"]


def test_a_flood_of_malformed_requests_changes_no_scores(server, stats_scorer, random_pairs) -> None:
    srv, _ = server
    rng = random.Random(1)
    good = [random_pairs(rng, rng.randint(1, 16)) for _ in range(16)]
    bad = [raw for raw, _, _ in BAD_SCORE_REQUESTS] * 3 + [json.dumps({"prompts": ["a"] * 65, "responses": ["b"] * 65})]

    def send(item):
        if isinstance(item, list):
            body = {"prompts": [p for p, _ in item], "responses": [r for _, r in item]}
            return item, post(srv.url, "/score", body)
        return None, httpx.post(srv.url + "/score", content=item, timeout=60)

    mixed = good + bad
    random.Random(2).shuffle(mixed)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, mixed))
    for pairs, response in results:
        if pairs is None:
            assert response.status_code in (413, 422)
        else:
            assert response.status_code == 200
            np.testing.assert_allclose(response.json()["scores"], alone(stats_scorer, pairs), atol=TOL, rtol=0)
    assert httpx.get(srv.url + "/health").json()["status"] == "ok"


def test_a_request_whose_scoring_fails_fails_alone(server, stats_scorer) -> None:
    srv, gate = server
    poison = ("why is the sky blue", "because")
    gate.fail_length = len(stats_scorer.encode(*([x] for x in poison)).input_ids[0])
    others = [PAIRS[0:2], PAIRS[2:4], [poison, PAIRS[1]]]
    try:
        gate.hold()
        with ThreadPoolExecutor(4) as pool:
            held = pool.submit(post, srv.url, "/score", {"prompts": ["x"], "responses": ["y"]})
            assert gate.entered.wait(30)
            waiting = [pool.submit(post, srv.url, "/score", body_of(pairs)) for pairs in others]
            until(lambda: srv.batcher.queued_pairs == 6)
            gate.opened.set()
            assert held.result().status_code == 200
            answers = [f.result() for f in waiting]
    finally:
        gate.fail_length = None
    assert [a.status_code for a in answers] == [200, 200, 500]  # tried together, then each alone
    for pairs, answer in zip(others[:2], answers, strict=False):
        np.testing.assert_allclose(answer.json()["scores"], alone(stats_scorer, pairs), atol=TOL, rtol=0)


def test_a_request_whose_client_went_away_is_not_scored(server) -> None:
    srv, gate = server
    gate.hold()
    calls_before = len(gate.calls)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(post, srv.url, "/score", {"prompts": ["x"], "responses": ["y"]})
        assert gate.entered.wait(30)
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
            httpx.post(srv.url + "/score", json={"prompts": ["a"] * 3, "responses": ["b"] * 3}, timeout=0.5)
        until(lambda: srv.batcher.admitted_pairs == 1)  # its 3 pairs left the queue unscored
        gate.opened.set()
        assert held.result().status_code == 200
    assert [len(c) for c in gate.calls[calls_before:]] == [1]


def test_health_reports_model_devices_and_queue(server) -> None:
    health = httpx.get(server[0].url + "/health").json()
    assert health == {"status": "ok", "model": "tiny", "devices": ["cpu"], "precision": ["fp32"], "max_length": 512,
                      "queue_pairs": 0, "in_flight_requests": 0, "max_queue_pairs": 4096, "max_pairs": 64,
                      "auth": False}  # fmt: skip


def until(condition, seconds: float = 30) -> None:
    event = threading.Event()
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        event.wait(0.01)
    raise AssertionError("timed out")
