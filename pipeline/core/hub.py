"""Push a saved reward model folder to the Hugging Face Hub through huggingface_hub.

The token is the recipe's hub_token when given, else the environment's (HF_TOKEN or `hf auth login`); it is passed
to huggingface_hub for the requests only, never written to disk or logs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx2
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

from pipeline.core.errors import UserError


@contextlib.contextmanager
def hub_errors(what: str, keep: str) -> Iterator[None]:
    """Turn any Hub failure inside the block into one UserError line: `cannot push {what}: <why>; {keep}`."""
    try:
        yield
    except OfflineModeIsEnabled as err:
        raise UserError(f"cannot push {what}: offline mode is on (HF_HUB_OFFLINE); {keep}") from err
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", "?")
        hint = " (check HF_TOKEN has write access)" if status in (401, 403) else ""
        raise UserError(f"cannot push {what}: the Hub answered HTTP {status}{hint}; {keep}") from err
    except (OSError, httpx2.TransportError) as err:  # DNS, connect, timeout: httpx2's are not OSErrors
        raise UserError(f"cannot push {what}: the Hugging Face Hub is unreachable; {keep}") from err


def push_folder(
    folder: str | Path,
    repo_id: str,
    private: bool | None = None,
    commit_message: str | None = None,
    token: str | None = None,
) -> str:
    """Create `repo_id` if needed and upload `folder` to it; returns the commit URL.

    Any network failure becomes a one-line UserError that says the local copy is kept.
    """
    api = HfApi(token=token or None)  # None: the environment's token
    keep = f"the model is kept in {folder}; push it later with `hf upload {repo_id} {folder}`"
    with hub_errors(f"to {repo_id}", keep):
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message or "Upload reward model trained with q2-reward",
        )
    return str(getattr(commit, "commit_url", commit))
