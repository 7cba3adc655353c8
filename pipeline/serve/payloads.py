"""Request bodies, read and checked before anything is scored: each problem is one `Problem` naming the field (and
the index) as FastAPI's validation errors do, `{"detail": [{"loc": ["body", "prompts", 3], "msg": ..., "type":
...}]}`. Conversational messages are rendered as the RL reward function renders them (`pipeline.data.conversation`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from typing_extensions import override

from pipeline.core.errors import UserError, one_line
from pipeline.data.conversation import answer_text, prompt_text

SCORE_FIELDS = ("prompts", "responses", "standardize")
MESSAGE_LIMIT = 300  # characters of a library's error message quoted back


class Problem(Exception):
    """A request the server refuses: HTTP `status`, and where in the body (`loc`) unless it is about no field."""

    @override
    def __init__(self, status: int, msg: str, loc: tuple[str | int, ...] | None = ("body",), kind: str = "value_error"):
        super().__init__(msg)
        self.status, self.msg, self.loc, self.kind = status, msg, loc, kind

    def body(self) -> dict[str, Any]:
        if self.loc is None:
            return {"detail": self.msg}
        return {"detail": [{"loc": list(self.loc), "msg": self.msg, "type": self.kind}]}


@dataclass
class Pairs:
    prompts: list[str]
    responses: list[str]
    standardize: bool = False


def parse_json(raw: bytes) -> dict[str, Any]:
    """A JSON object, or a 422."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as err:  # bad JSON or UTF-8, too deep, a number too long
        raise Problem(422, f"invalid JSON: {one_line(err, MESSAGE_LIMIT)}", kind="json_invalid") from err
    if not isinstance(body, dict):
        raise Problem(422, f"the body must be a JSON object, not {_json_type(body)}", kind="dict_type")
    return body


def score_pairs(raw: bytes, max_pairs: int) -> Pairs:
    """`POST /score`: {"prompts": [...], "responses": [...], "standardize": false}; texts or lists of messages."""
    body = parse_json(raw)
    unknown = [key for key in body if key not in SCORE_FIELDS]
    if unknown:
        raise Problem(422, f"unknown field; the fields are {', '.join(SCORE_FIELDS)}", ("body", unknown[0]), "extra")
    prompts = _list(body, "prompts", max_pairs)
    responses = _list(body, "responses", max_pairs)
    if len(prompts) != len(responses):
        raise Problem(
            422, f"{len(prompts)} prompts but {len(responses)} responses; give one response per prompt", ("body",)
        )
    standardize = body.get("standardize", False)
    if not isinstance(standardize, bool):
        raise Problem(422, "must be true or false", ("body", "standardize"), "bool_type")
    return Pairs(
        [_render(prompt_text, p, "prompts", i) for i, p in enumerate(prompts)],
        [_render(answer_text, r, "responses", i) for i, r in enumerate(responses)],
        standardize,
    )


def reward_pairs(raw: bytes, max_pairs: int) -> Pairs:
    """OpenRLHF's `POST /get_reward`: {"query": [prompt + response, ...], "prompts": [...], "labels": [...]}. Each
    response is its query after its prompt; labels and other fields are ignored."""
    body = parse_json(raw)
    queries = _list(body, "query", max_pairs)
    if "prompts" not in body:
        raise Problem(
            422,
            "field required: each query is scored as (prompt, the rest of the query)",
            ("body", "prompts"),
            "missing",
        )
    prompts = _list(body, "prompts", max_pairs)
    if len(prompts) != len(queries):
        raise Problem(422, f"{len(queries)} queries but {len(prompts)} prompts; give one prompt per query", ("body",))
    responses = []
    for i, (query, prompt) in enumerate(zip(queries, prompts, strict=True)):
        query, prompt = _text(query, "query", i), _text(prompt, "prompts", i)
        if not query.startswith(prompt):
            raise Problem(422, f"query {i} does not start with its prompt (prompts[{i}])", ("body", "query", i))
        responses.append(query[len(prompt) :])
    return Pairs(prompts, responses)


def _list(body: dict[str, Any], name: str, max_pairs: int) -> list[Any]:
    if name not in body:
        raise Problem(422, "field required", ("body", name), "missing")
    value = body[name]
    if not isinstance(value, list):
        raise Problem(422, f"must be a list, not {_json_type(value)}", ("body", name), "list_type")
    if len(value) > max_pairs:
        raise Problem(
            413,
            f"{len(value)} items; at most {max_pairs} per request (--max_pairs): split it",
            ("body", name),
            "too_long",
        )
    return value


def _render(render: Callable[[Any, str], str], value: Any, name: str, index: int) -> str:
    """Text as it is, messages rendered as training rendered them; a malformed message names its index."""
    try:
        text = render(value, f"{name}[{index}]")
    except UserError as err:
        raise Problem(422, one_line(err), ("body", name, index)) from err
    return _text(text, name, index)


def _text(value: Any, name: str, index: int) -> str:
    if not isinstance(value, str):
        raise Problem(422, f"must be a string, not {_json_type(value)}", ("body", name, index), "string_type")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:  # JSON may carry a lone surrogate (\ud800), which no tokenizer reads
        raise Problem(
            422, "not valid Unicode text (a lone surrogate)", ("body", name, index), "string_unicode"
        ) from err
    return value


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
