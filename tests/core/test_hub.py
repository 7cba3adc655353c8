"""Push to the Hub through huggingface_hub with only the network layer (the HTTP transport) replaced."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx2
import huggingface_hub.constants
import pytest
from huggingface_hub.utils import _http

from pipeline.core.errors import UserError
from pipeline.core.hub import push_folder

TOKEN = "hf_testtoken_do_not_leak"


class FakeHub:
    """Answers the few endpoints create_repo + upload_folder use, and records every request."""

    def __init__(self) -> None:
        self.requests: list[httpx2.Request] = []
        self.committed: dict[str, bytes] = {}

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/api/repos/create":
            return httpx2.Response(200, json={"url": "https://huggingface.co/me/rm", "name": "me/rm"})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if path.endswith("/preupload/main"):
            files = [
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                for f in json.loads(request.content)["files"]
            ]
            return httpx2.Response(200, json={"files": files})
        if path.endswith("/commit/main"):
            for line in request.content.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    self.committed[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            return httpx2.Response(
                200, json={"commitUrl": "https://huggingface.co/me/rm/commit/abc1", "commitOid": "abc1"}
            )
        return httpx2.Response(404, json={"error": f"unexpected {path}"})


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    def install(handler) -> None:
        _http.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(handler)))

    yield install
    _http.set_client_factory(_http.default_client_factory)


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "reward_model"
    folder.mkdir()
    (folder / "config.json").write_text('{"num_labels": 1}')
    (folder / "model.safetensors").write_bytes(b"\x00weights")
    (folder / "README.md").write_text("---\nlibrary_name: transformers\n---\n# Reward model\n")
    return folder


def test_push_uploads_every_file_with_the_env_token(online, model_folder: Path) -> None:
    hub = FakeHub()
    online(hub)
    url = push_folder(model_folder, "me/rm")
    assert url == "https://huggingface.co/me/rm/commit/abc1"
    assert hub.committed == {p.name: p.read_bytes() for p in model_folder.iterdir()}
    hub_calls = [r for r in hub.requests if r.url.path != "/api/agent-harnesses"]
    assert {r.headers.get("authorization") for r in hub_calls} == {f"Bearer {TOKEN}"}
    # The token never lands on disk next to the model.
    assert not any(TOKEN.encode() in p.read_bytes() for p in model_folder.iterdir())


def test_unreachable_hub_is_one_line_and_keeps_local_copy(online, model_folder: Path) -> None:
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    online(refuse)
    before = {p.name: p.read_bytes() for p in model_folder.iterdir()}
    with pytest.raises(UserError, match="unreachable") as info:
        push_folder(model_folder, "me/rm")
    message = str(info.value)
    assert "\n" not in message and str(model_folder) in message and TOKEN not in message
    assert {p.name: p.read_bytes() for p in model_folder.iterdir()} == before


def test_offline_mode_is_one_line(monkeypatch: pytest.MonkeyPatch, model_folder: Path) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="offline mode is on") as info:
        push_folder(model_folder, "me/rm")
    assert "kept in" in str(info.value)


def test_forbidden_names_the_token(online, model_folder: Path) -> None:
    online(lambda request: httpx2.Response(403, json={"error": "forbidden"}))
    with pytest.raises(UserError, match="HTTP 403 .*HF_TOKEN"):
        push_folder(model_folder, "me/rm")
