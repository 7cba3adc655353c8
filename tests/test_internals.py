"""Every private name (leading underscore) of trl, transformers, datasets, accelerate, torch, argparse or evaluate that
`pipeline/` uses, and every method of theirs that it overrides, still exists and does what we rely on.

A release that renames or reshapes one fails here, naming it and the installed versions, instead of silently changing
training, scoring or the error messages. Each check is a test marked `@binds(...)` with what it binds: a private name
(`_fingerprint`), an override (`QRewardTrainer.log`) or a public function we restate (`sdpa_attention_forward`).
Two scans keep the lists complete: one reads pipeline/'s source for private names of those libraries, the other
finds every override at runtime (each must be marked `@override`). A name they find that no test binds, or that
docs/coupling.md does not list, fails. One tiny ranking trainer, trained for 4 steps (2 epochs, 2 checkpoints),
shows each trainer override is still called.
"""

from __future__ import annotations

import argparse
import ast
import functools
import importlib
import inspect
import platform
import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import accelerate
import datasets
import evaluate
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import transformers
import trl
from transformers import Trainer
from transformers.trainer_pt_utils import get_length_grouped_indices
from trl import RewardTrainer, TrlParser

from pipeline.model.encoding import encode_preference_pairs
from pipeline.training import GroupCollator, RankingRewardTrainer, ranking_dataset
from pipeline.training.checkpoints import COMPLETE
from pipeline.training.chunked_forward import LengthChunkedForward
from pipeline.training.trainer import EpochSeededLengthGroupedSampler, QRewardTrainer

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pipeline"
DOCS = ROOT / "docs" / "coupling.md"
LIBRARIES = ("trl", "transformers", "datasets", "accelerate", "torch", "argparse", "evaluate")
VERSIONS = (
    f"trl {trl.__version__}, transformers {transformers.__version__}, datasets {datasets.__version__}, "
    f"accelerate {accelerate.__version__}, torch {torch.__version__}, evaluate {evaluate.__version__}, "
    f"Python {platform.python_version()} (argparse)"
)
# Overrides that do not carry @override yet: their file is outside the change that added the marks. Remove an entry
# once the method is marked (a test fails while the entry is stale).
NOT_YET_MARKED: set[str] = set()
# Overrides that deliberately take other arguments than the base method: constructors, and evaluate's `_compute`,
# whose keywords are the metric's own features.
OWN_SIGNATURE = {"__init__", "PairwiseAccuracy._compute"}

BOUND_PRIVATE: set[str] = set()  # private library names (`_name`) some test below binds
BOUND_OVERRIDES: set[str] = set()  # overrides (`OurClass.method`) some test below binds
BOUND_PUBLIC: set[str] = set()  # public library names that pipeline/ restates or relies on closely


def binds(*names: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Mark a test as the check of `names`; its failure names them and the installed versions."""

    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        for name in names:
            (BOUND_OVERRIDES if "." in name else BOUND_PRIVATE if name.startswith("_") else BOUND_PUBLIC).add(name)

        @functools.wraps(test)
        def checked(*args: Any, **kwargs: Any) -> None:
            try:
                test(*args, **kwargs)
            except Exception as err:  # AssertionError included: the reason, prefixed with what and which versions
                raise AssertionError(f"{', '.join(names)} changed under {VERSIONS}: {err} (docs/coupling.md)") from err

        return checked

    return decorate


def assert_takes(owner: Any, name: str, *args: str, method: bool = True, **kwargs: str) -> None:
    """`owner.name` exists and accepts the call we make (argument names stand in for the values)."""
    function = getattr(owner, name, None)
    internal = f"{getattr(owner, '__name__', owner)}.{name}"
    assert callable(function), f"{internal} no longer exists"
    try:
        inspect.signature(function).bind(*([None] if method else []), *args, **kwargs)
    except TypeError as err:
        shown = ", ".join([*args, *(f"{k}=" for k in kwargs)])
        raise AssertionError(f"{internal} no longer takes ({shown})") from err


# -- the scans that keep the lists complete ----------------------------------------------------------------------------


def _is_library(cls: type) -> bool:
    return cls.__module__.split(".")[0] in LIBRARIES


def _private(name: str) -> bool:
    return len(name) > 1 and name.startswith("_") and not name.startswith("__")


@functools.cache
def _package_modules() -> tuple[tuple[Path, Any], ...]:
    """(path, module) of every pipeline/ file; the module imported where the file defines classes, else None."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = None
        if any(isinstance(node, ast.ClassDef) for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))):
            parts = path.relative_to(ROOT).with_suffix("").parts
            module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        found.append((path, module))
    return tuple(found)


def _package_classes() -> Iterator[type]:
    for _, module in _package_modules():
        if module is not None:
            yield from (c for c in vars(module).values() if isinstance(c, type) and c.__module__ == module.__name__)


@functools.cache
def _mentioned_by_a_base(cls: type, name: str) -> bool:
    """Whether a library base class of `cls` has or mentions `name` (an attribute it sets, a method it calls)."""
    for base in filter(_is_library, cls.__mro__[1:]):
        if name in vars(base):
            return True
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):
            continue
        if re.search(rf"\b{re.escape(name)}\b", source):
            return True
    return False


def _strings_read_as_names(node: ast.AST) -> list[ast.AST]:
    """String constants that name attributes: getattr(x, "_n"), "_n" in vars(x), ("_n", ...) looked up in a loop."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) > 1:
        return [node.args[1]] if node.func.id in ("getattr", "hasattr", "setattr", "delattr") else []
    if isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
        return [node.left]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return list(node.elts)
    return []


def _defined_names(node: ast.AST) -> list[str]:
    """The private names a node defines: a function, class, variable, argument or attribute assignment."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        names = [node.name]
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
        names = [node.id]
    elif isinstance(node, ast.arg):
        names = [node.arg]
    elif isinstance(node, (ast.Assign, ast.AnnAssign)):  # not AugAssign: `x._n += 1` reads an existing _n
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [target.attr for target in targets if isinstance(target, ast.Attribute)]
    else:
        names = []
    return [name for name in names if _private(name)]


def _used_names(node: ast.AST, other_modules: set[str]) -> list[str]:
    """The private names a node reads, sets or imports (not on modules outside the libraries, like `os._exit`)."""
    names = []
    if isinstance(node, ast.Attribute) and not (isinstance(node.value, ast.Name) and node.value.id in other_modules):
        names.append(node.attr)
    if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
        names.extend(alias.name for alias in node.names)
    for constant in _strings_read_as_names(node):
        if isinstance(constant, ast.Constant) and isinstance(constant.value, str) and constant.value.isidentifier():
            names.append(constant.value)
    return [name for name in names if _private(name)]


def private_library_names() -> dict[str, set[str]]:
    """Private names of the libraries that pipeline/ reads, sets, calls or overrides -> the files that do.

    A private name counts as ours when pipeline/ defines it (a function, class, variable, attribute or dataclass
    field), except inside a subclass of a library class, where it is the library's when a library base class has or
    mentions it (an override, or an attribute the base sets).
    """
    ours: set[str] = set()
    used: defaultdict[str, set[str]] = defaultdict(set)
    theirs: defaultdict[str, set[str]] = defaultdict(set)
    for path, module in _package_modules():
        where = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(encoding="utf-8"))
        other_modules = {
            (alias.asname or alias.name).split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
            if alias.name.split(".")[0] not in LIBRARIES
        }
        subclass_of = {}  # id(node) -> the library subclass whose body holds the node
        for node in ast.walk(tree):
            cls = getattr(module, node.name, None) if isinstance(node, ast.ClassDef) else None
            if isinstance(cls, type) and any(map(_is_library, cls.__mro__[1:])):
                subclass_of.update({id(inner): cls for inner in ast.walk(node)})
        for node in ast.walk(tree):
            for name in _defined_names(node):
                cls = subclass_of.get(id(node))
                if cls is not None and _mentioned_by_a_base(cls, name):
                    theirs[name].add(where)
                else:
                    ours.add(name)
            for name in _used_names(node, other_modules):
                used[name].add(where)
    for name, files in used.items():
        if name not in ours:
            theirs[name] |= files
    return dict(theirs)


def _methods(cls: type) -> Iterator[tuple[str, Any]]:
    """(name, attribute) of each method that pipeline/'s own source defines in `cls` (not dataclass-made ones)."""
    for name, value in vars(cls).items():
        function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
        code = getattr(function, "__code__", None)
        if code is not None and Path(code.co_filename).resolve().is_relative_to(PACKAGE):
            yield name, value


def overrides() -> dict[str, tuple[Any, list[type]]]:
    """`OurClass.method` -> (the method, the base classes other than `object` that define it), for every method of
    pipeline/ that a base class also defines."""
    found = {}
    for cls in _package_classes():
        for name, value in _methods(cls):
            bases = [base for base in cls.__mro__[1:] if base is not object and name in vars(base)]
            if bases:
                found[f"{cls.__name__}.{name}"] = (value, bases)
    return found


def library_overrides() -> dict[str, tuple[Any, type]]:
    """The overrides of a library method: `OurClass.method` -> (the method, the nearest library class defining it)."""
    found = {}
    for name, (value, bases) in overrides().items():
        library = [base for base in bases if _is_library(base)]
        if library:
            found[name] = (value, library[0])
    return found


def _unwrapped(value: Any) -> Any:
    return getattr(value, "__func__", value)


def test_every_private_library_name_pipeline_uses_is_bound_here_and_listed_in_the_docs() -> None:
    found = private_library_names()
    unbound = {name: sorted(files) for name, files in found.items() if name not in BOUND_PRIVATE}
    assert not unbound, f"pipeline/ uses private library names that no test here binds (add a check): {unbound}"
    stale = sorted(BOUND_PRIVATE - set(found))
    assert not stale, f"bound here but pipeline/ no longer uses them (drop their check and docs row): {stale}"
    documented = DOCS.read_text(encoding="utf-8")
    missing = sorted(name for name in found if f"`{name}`" not in documented)
    assert not missing, f"docs/coupling.md does not list {missing}"


def test_every_override_is_marked_override_and_every_mark_overrides() -> None:
    found = overrides()
    unmarked = sorted(name for name, (value, _) in found.items() if not getattr(value, "__override__", False))
    assert set(unmarked) == NOT_YET_MARKED, f"mark these @override (from typing_extensions): {unmarked}"
    for cls in _package_classes():
        for name, value in _methods(cls):
            qualified = f"{cls.__name__}.{name}"
            assert not getattr(value, "__override__", False) or qualified in found, f"{qualified}: no base has it"


def test_every_override_of_a_library_method_is_bound_here_and_listed_in_the_docs() -> None:
    found = set(library_overrides())
    assert found == BOUND_OVERRIDES, (
        f"overrides of library methods that no test here binds: {sorted(found - BOUND_OVERRIDES)}; "
        f"checks of overrides that are gone: {sorted(BOUND_OVERRIDES - found)}"
    )
    documented = DOCS.read_text(encoding="utf-8")
    missing = sorted(name for name in found if f"`{name}`" not in documented)
    assert not missing, f"docs/coupling.md does not list {missing}"


def test_every_public_name_bound_here_is_listed_in_the_docs() -> None:
    documented = DOCS.read_text(encoding="utf-8")
    missing = sorted(name for name in BOUND_PUBLIC if f"`{name}`" not in documented)
    assert not missing, f"docs/coupling.md does not list {missing}"


def test_each_override_still_accepts_the_arguments_of_the_method_it_overrides() -> None:
    """The library calls our override as it calls its own method: with its positional or keyword arguments."""
    for name, (value, base_class) in library_overrides().items():
        method = name.split(".")[1]
        if name in OWN_SIGNATURE or method in OWN_SIGNATURE:
            continue
        ours = inspect.signature(_unwrapped(value))
        base = inspect.signature(_unwrapped(vars(base_class)[method]))
        fixed = [p for p in list(base.parameters.values())[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        positional = [p.name for p in fixed if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        keywords = {p.name: p.name for p in fixed if p.kind == p.KEYWORD_ONLY}
        by_name = {**keywords, **{p.name: p.name for p in fixed if p.kind == p.POSITIONAL_OR_KEYWORD}}
        for args, kwargs in ((positional, keywords), ([p.name for p in fixed if p.kind == p.POSITIONAL_ONLY], by_name)):
            try:
                ours.bind("self", *args, **kwargs)
            except TypeError as err:
                raise AssertionError(
                    f"{name}{ours} no longer accepts {base_class.__name__}.{method}{base} under {VERSIONS}"
                ) from err


# -- trl and transformers: the trainer ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.recipe.config import PipelineRewardConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = pd.DataFrame(
        {
            "prompt": ["why"] * 3 + ["how"],
            "chosen": ["because light", "because light", "no", "boil water"],
            "rejected": ["no", "bad", "bad", "fry"],
            "margin": [1.0, 2.0, 1.0, 1.0],
        }
    )
    dataset = ranking_dataset(pairs, encode_preference_pairs(tokenizer, pairs, max_length=64))
    output_dir = tmp_path_factory.mktemp("internals")
    args = PipelineRewardConfig(output_dir=str(output_dir), num_train_epochs=2, per_device_train_batch_size=1,
                                learning_rate=1e-2, logging_steps=1, save_steps=2, save_total_limit=1,
                                report_to="none", disable_tqdm=True)  # fmt: skip
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    trainer = RankingRewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                   data_collator=GroupCollator(tokenizer.pad_token_id))  # fmt: skip
    epochs: list[int] = []
    original = EpochSeededLengthGroupedSampler.set_epoch

    def record(sampler: EpochSeededLengthGroupedSampler, epoch: int) -> None:
        epochs.append(epoch)
        original(sampler, epoch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpochSeededLengthGroupedSampler, "set_epoch", record)
        trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    return {"trainer": trainer, "dataset": dataset, "epochs": epochs, "logged": logged, "output_dir": output_dir}


@binds("QRewardTrainer.create_optimizer")
def test_create_optimizer(trained: dict[str, Any]) -> None:
    # Ours splits transformers' parameter groups by layer depth (layer_lr_decay); the first call builds it.
    assert_takes(RewardTrainer, "create_optimizer", "model")
    assert "self.create_optimizer(" in inspect.getsource(Trainer), "Trainer no longer builds its optimizer with it"
    trainer = trained["trainer"]
    assert isinstance(trainer.optimizer, torch.optim.Optimizer) and trainer.create_optimizer() is trainer.optimizer, (
        "create_optimizer no longer keeps the optimizer it built as trainer.optimizer"
    )


@binds("_save_checkpoint", "QRewardTrainer._save_checkpoint")
def test_save_checkpoint(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "_save_checkpoint", "model", "trial")
    # We lift save_total_limit during the save so transformers deletes nothing before our marker is written.
    assert "save_total_limit" in inspect.getsource(Trainer._save_checkpoint), (
        "Trainer._save_checkpoint no longer reads args.save_total_limit to delete old checkpoints"
    )
    kept = sorted(p.name for p in trained["output_dir"].glob("checkpoint-*"))
    assert kept == ["checkpoint-4"], f"Trainer._save_checkpoint left {kept}, not only the newest"
    assert (trained["output_dir"] / "checkpoint-4" / COMPLETE).is_file(), (
        "RewardTrainer._save_checkpoint is no longer called at each save (no completeness marker)"
    )
    assert trained["trainer"].args.save_total_limit == 1


@binds("_get_output_dir")
def test_get_output_dir(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "_get_output_dir", trial="trial")
    trainer = trained["trainer"]
    assert trainer._get_output_dir(trial=None) == trainer.args.output_dir, (
        "Trainer._get_output_dir no longer returns args.output_dir outside hyperparameter search"
    )


@binds("QRewardTrainer.__init__", "RankingRewardTrainer.__init__")
def test_init() -> None:
    # Ours only take `length_expert_weight` (and `use_margin`) and pass everything else on, as training/run.py does.
    assert_takes(RewardTrainer, "__init__", model="m", args="a", train_dataset="d", eval_dataset="e",
                 processing_class="t", data_collator="c", callbacks="cb")  # fmt: skip
    assert "length_expert_weight" in inspect.signature(QRewardTrainer.__init__).parameters
    assert "use_margin" in inspect.signature(RankingRewardTrainer.__init__).parameters


@binds("_inner_training_loop", "QRewardTrainer._inner_training_loop")
def test_inner_training_loop(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "_inner_training_loop")
    assert "_inner_training_loop" in inspect.getsource(Trainer.train), "Trainer.train no longer runs it"
    # Only our override starts the tokens/s clock before the first log.
    assert "tokens_per_s" in trained["logged"][0], "Trainer._inner_training_loop is no longer called"


@binds("QRewardTrainer.log")
def test_log(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "log", "logs", "start_time")
    for entry in trained["logged"]:
        missing = {"tokens_per_s", "num_tokens", "accuracy", "mean_reward"} - set(entry)
        assert not missing, f"RewardTrainer.log no longer logs {sorted(missing)} from _metrics"


@binds(
    "_get_train_sampler", "QRewardTrainer._get_train_sampler", "EpochSeededLengthGroupedSampler.__iter__", "set_epoch"
)
def test_get_train_sampler(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "_get_train_sampler", "train_dataset")
    trainer = trained["trainer"]
    for name in ("train_sampling_strategy", "length_column_name", "train_batch_size", "gradient_accumulation_steps",
                 "data_seed"):  # fmt: skip
        assert hasattr(trainer.args, name), f"TrainingArguments has no {name}"
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, EpochSeededLengthGroupedSampler)
    assert sampler.seed == (trainer.args.seed if trainer.args.data_seed is None else trainer.args.data_seed)
    assert sorted(sampler) == list(range(len(trained["dataset"]))), "the sampler no longer yields a permutation"
    # The order of an epoch depends on set_epoch reaching our sampler through accelerate's data loader.
    epochs = trained["epochs"]
    assert sorted(set(epochs)) == [0, 1] and epochs == sorted(epochs), (
        f"Trainer._inner_training_loop / accelerate's DataLoaderShard.set_epoch set the sampler's epoch to {epochs}, "
        "not 0 then 1"
    )


@binds("get_length_grouped_indices")
def test_get_length_grouped_indices() -> None:
    # Public, but what EpochSeededLengthGroupedSampler draws its order from.
    assert_takes(transformers.trainer_pt_utils, "get_length_grouped_indices", "lengths", "batch_size",
                 method=False, generator="generator")  # fmt: skip
    indices = get_length_grouped_indices([3, 1, 2, 5, 4], 2, generator=torch.Generator().manual_seed(0))
    assert sorted(indices) == [0, 1, 2, 3, 4], "it no longer returns a permutation"


@binds("_set_signature_columns_if_needed", "_signature_columns", "QRewardTrainer._set_signature_columns_if_needed")
def test_set_signature_columns_if_needed(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "_set_signature_columns_if_needed")
    assert trained["trainer"]._signature_columns == ["answer_ids", "ranks", "length"], (
        "Trainer._signature_columns is no longer filled by _set_signature_columns_if_needed"
    )


@binds("_prepare_dataset", "QRewardTrainer._prepare_dataset")
def test_prepare_dataset(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "_prepare_dataset", "dataset", "processing_class", "args", "dataset_name")
    assert trained["trainer"].train_dataset is trained["dataset"], (
        "RewardTrainer._prepare_dataset is no longer how RewardTrainer.__init__ prepares the train dataset"
    )


@binds("_metrics", "_total_train_tokens", "_tp_size")
def test_metrics_total_train_tokens_and_tp_size(trained: dict[str, Any]) -> None:
    trainer = trained["trainer"]
    metrics = getattr(trainer, "_metrics", None)
    assert isinstance(metrics, dict) and set(metrics) == {"train", "eval"}, (
        "RewardTrainer._metrics is no longer {'train': ..., 'eval': ...}"
    )
    assert all(isinstance(metrics[m], defaultdict) and metrics[m].default_factory is list for m in metrics), (
        "RewardTrainer._metrics is no longer a defaultdict(list) per mode"
    )
    assert isinstance(getattr(trainer, "_tp_size", None), int), "RewardTrainer._tp_size is gone"
    total = getattr(trainer, "_total_train_tokens", None)
    assert isinstance(total, int) and total > 0, "RewardTrainer._total_train_tokens is gone"
    assert trained["logged"][-1]["num_tokens"] == total, "RewardTrainer.log no longer logs _total_train_tokens"


@binds("PairwiseRewardTrainer.compute_loss", "RankingRewardTrainer.compute_loss")
def test_compute_loss_pairwise_is_trls_on_our_forward(trained: dict[str, Any]) -> None:
    assert_takes(RewardTrainer, "compute_loss", "model", "inputs", "return_outputs", "num_items_in_batch")
    # How Trainer calls it: (model, inputs, num_items_in_batch=...) in training, return_outputs=True in evaluation.
    assert "self.compute_loss(model, inputs, num_items_in_batch=" in inspect.getsource(Trainer), (
        "Trainer.training_step no longer calls compute_loss(model, inputs, num_items_in_batch=...)"
    )
    trainer = trained["trainer"]
    model = trainer.model.eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (4, 9), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 3:] = mask[2, 5:] = 0  # chosen rows 0-1, rejected rows 2-3, different lengths: several pieces
    with torch.no_grad():
        inputs = {"input_ids": ids, "attention_mask": mask}
        loss = RewardTrainer.compute_loss(trainer, LengthChunkedForward(model), inputs)
        rewards = model(input_ids=ids, attention_mask=mask).logits[:, 0]
    trainer._metrics["eval"].clear()
    expected = -F.logsigmoid(rewards[:2] - rewards[2:]).mean()
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0, msg="RewardTrainer.compute_loss changed")


@binds("PipelineRewardConfig.__post_init__")
def test_post_init(tmp_path: Path) -> None:
    from pipeline.recipe.config import PipelineRewardConfig

    # Ours settles bf16/use_cpu before TrainingArguments.__post_init__ checks them.
    assert_takes(trl.RewardConfig, "__post_init__")
    args = PipelineRewardConfig(output_dir=str(tmp_path), report_to="none")
    assert isinstance(args.bf16, bool) and isinstance(args.activation_checkpointing, bool)
    assert args.device.type in ("cpu", "cuda", "mps", "xpu"), "TrainingArguments.__post_init__ did not run"


# -- transformers: attention and DistilBERT's forward ------------------------------------------------------------------


@binds("_attn_implementation", "set_attn_implementation")
def test_attn_implementation(tiny_model_dir: Path) -> None:
    from transformers import AttentionInterface, AutoModelForSequenceClassification
    from transformers.masking_utils import AttentionMaskInterface

    from pipeline.training.attention import NAME, fp32_attention_on_cpu, sdpa_fp32_on_cpu

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    # The scorer's fast paths and the training attention read it; a model loads with SDPA by default.
    assert model.config._attn_implementation == "sdpa", f"a model loads with {model.config._attn_implementation}"
    assert_takes(model, "set_attn_implementation", "attn_implementation", method=False)
    with fp32_attention_on_cpu(model, True):
        assert model.config._attn_implementation == NAME, "set_attn_implementation no longer sets it"
        assert AttentionInterface()[NAME] is sdpa_fp32_on_cpu, "AttentionInterface.register no longer registers"
        assert NAME in AttentionMaskInterface(), "AttentionMaskInterface.register no longer registers"
        assert "attn_implementation" not in model.config.to_json_string(), "it is now saved with the config"
    assert model.config._attn_implementation == "sdpa"


@binds("sdpa_attention_forward", "sdpa_mask")
def test_sdpa_functions_the_training_attention_wraps() -> None:
    # Public, but what pipeline/training/attention.py wraps: SDPA's attention function, called as the model calls it.
    from transformers.integrations import sdpa_attention
    from transformers.masking_utils import sdpa_mask

    assert_takes(sdpa_attention, "sdpa_attention_forward", "module", "query", "key", "value", "attention_mask",
                 method=False, dropout="dropout", scaling="scaling")  # fmt: skip
    assert callable(sdpa_mask)


@binds("create_bidirectional_mask", "ALL_ATTENTION_FUNCTIONS", "eager_attention_forward", "TransformerBlock")
def test_distilbert_forward_restated_for_the_first_token(tiny_model_dir: Path) -> None:
    """pipeline/model/first_token.py restates DistilBERT's forward: every module, attribute and function it calls."""
    from transformers import AutoModelForSequenceClassification

    from pipeline.model import first_token

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    module = inspect.getmodule(type(model.distilbert))
    missing = [name for name in first_token._MODULE_NAMES if not hasattr(module, name)]
    assert not missing, f"{module.__name__} has no {missing}"
    parameters = inspect.signature(module.create_bidirectional_mask).parameters
    assert {"config", "attention_mask", "inputs_embeds"} <= set(parameters), f"create_bidirectional_mask{parameters}"
    block = model.distilbert.transformer.layer[-1]
    wanted = {
        model: ("distilbert", "pre_classifier", "classifier", "dropout"),
        model.distilbert: ("embeddings", "transformer"),
        block: ("attention", "sa_layer_norm", "ffn", "output_layer_norm"),
        block.attention: ("q_lin", "k_lin", "v_lin", "out_lin", "attention_head_size", "scaling", "config"),
        block.ffn: ("ff_chunk",),
    }
    gone = [f"{type(owner).__name__}.{name}" for owner, names in wanted.items() for name in names
            if not hasattr(owner, name)]  # fmt: skip
    assert not gone, f"DistilBERT no longer has {gone}"
    ids = torch.tensor(first_token.check_rows(model.config.vocab_size)[0] * 2).view(2, 9)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    for implementation in ("sdpa", "eager"):
        model.set_attn_implementation(implementation)
        logits = first_token.first_token_logits(model)
        assert logits is not None, f"first-token scoring is off under {implementation}"
        assert first_token.check(model, logits, ids, mask), (
            f"first-token logits differ from the forward ({implementation})"
        )


# -- accelerate and torch: hooks, wrappers, CPU features ---------------------------------------------------------------


@binds("_hf_hook", "_original_forward")
def test_accelerate_hook_and_wrapped_forward_markers() -> None:
    from accelerate import Accelerator
    from accelerate.hooks import ModelHook, add_hook_to_module

    # first_token.py leaves a hooked module (device maps, offloading) or an autocast-wrapped forward to the model.
    layer = torch.nn.Linear(2, 2)
    add_hook_to_module(layer, ModelHook())
    assert hasattr(layer, "_hf_hook"), "accelerate's add_hook_to_module no longer sets module._hf_hook"
    assert "_original_forward = model.forward" in inspect.getsource(Accelerator.prepare_model), (
        "Accelerator.prepare_model no longer keeps the model's own forward as _original_forward under autocast"
    )


@binds("_forward_hooks", "_forward_pre_hooks")
def test_module_forward_hooks() -> None:
    layer = torch.nn.Linear(2, 2)
    assert not layer._forward_hooks and not layer._forward_pre_hooks
    layer.register_forward_hook(lambda *args: None)
    layer.register_forward_pre_hook(lambda *args: None)
    assert layer._forward_hooks and layer._forward_pre_hooks, "register_forward_(pre_)hook no longer fills them"


@binds("_is_avx512_bf16_supported", "_is_amx_tile_supported")
def test_cpu_bf16_feature_checks() -> None:
    # `bf16: auto` and `precision: auto` read them; absent, every CPU would count as one without native bf16.
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, name, None)
        assert callable(check) and isinstance(check(), bool), f"torch.cpu.{name}() is gone"


# -- datasets: fingerprints and index mappings -------------------------------------------------------------------------


@binds("_fingerprint")
def test_dataset_fingerprint(tmp_path: Path) -> None:
    # The resume check's identity of the data step's splits (built with an explicit fingerprint), and sources.py's of
    # a save_to_disk input (the same folder loads with the same one each time); a change of the rows changes it.
    table = datasets.Dataset.from_dict({"text": ["a", "b", "c"]}).data.table
    assert datasets.Dataset(table, fingerprint="q2")._fingerprint == "q2", "Dataset(fingerprint=...) no longer sets it"
    dataset = datasets.Dataset(table)
    assert isinstance(dataset._fingerprint, str) and dataset._fingerprint
    dataset.save_to_disk(str(tmp_path / "saved"))
    loaded = [datasets.load_from_disk(str(tmp_path / "saved"))._fingerprint for _ in range(2)]
    assert loaded[0] == loaded[1], "load_from_disk of one folder gives a new one each time"
    assert dataset.map(lambda row: {"text": row["text"] + "!"})._fingerprint != dataset._fingerprint


@binds("_indices")
def test_dataset_indices() -> None:
    # sources.py reads `data.table` as the rows: only true without an indices mapping (select, shuffle, sort...).
    dataset = datasets.Dataset.from_dict({"n": [0, 1, 2]})
    assert dataset._indices is None
    selected = dataset.select([2, 0])
    assert selected._indices is not None, "select no longer keeps an indices mapping"
    flat = selected.flatten_indices()
    assert flat._indices is None and flat.data.table.column("n").to_pylist() == [2, 0]


# -- argparse and TRL's parser -----------------------------------------------------------------------------------------


@binds("_actions")
def test_parser_actions() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", type=int)
    assert [action.dest for action in parser._actions][-1] == "key"


@binds("_get_value", "_check_value", "RecipeParser._get_value", "RecipeParser._check_value")
def test_value_conversion_and_choices() -> None:
    from pipeline.recipe import parser as recipe_parser

    assert_takes(argparse.ArgumentParser, "_get_value", "action", "arg_string")
    assert_takes(argparse.ArgumentParser, "_check_value", "action", "value")
    # The recipe's YAML values go through the same two calls as the command line's; a bad one raises our _BadValue.
    parser = recipe_parser.make_parser()
    choices = next(action for action in parser._actions if action.choices is not None and action.option_strings)
    number = next(action for action in parser._actions if recipe_parser._kind(action) is int and action.option_strings)
    for action, value in ((choices, "no-such-choice"), (number, "many")):
        with pytest.raises(recipe_parser._BadValue):
            parser.parse_known_args([action.option_strings[0], value])
    plain = argparse.ArgumentParser()
    with pytest.raises(argparse.ArgumentError):
        plain._get_value(number, "many")


@binds("_get_help_string", "_ShortHelpFormatter._get_help_string")
def test_help_string() -> None:
    from pipeline.recipe.parser import _ShortHelpFormatter

    parser = argparse.ArgumentParser(formatter_class=_ShortHelpFormatter)
    parser.add_argument("--steps", default=3, help="how many")
    assert "how many (default: 3)" in parser.format_help(), "HelpFormatter no longer asks _get_help_string"


@binds("RecipeParser.__init__", "RecipeParser.error", "FlagParser.__init__", "FlagParser.error")
def test_parser_init_and_error() -> None:
    from pipeline.core.errors import FlagParser, UserError
    from pipeline.recipe import parser as recipe_parser

    assert_takes(TrlParser, "__init__", "dataclass_types", allow_abbrev="a", add_help="h", usage="u")
    assert_takes(argparse.ArgumentParser, "__init__", prog="p", allow_abbrev="a", description="d")
    with pytest.raises(recipe_parser._ParseError):  # argparse reports a missing value through error()
        recipe_parser.make_parser().parse_known_args(["--seed"])
    flags = FlagParser("cmd")
    flags.add_argument("--model")
    with pytest.raises(UserError, match="cmd --help"):
        flags.parse_args(["--mod", "x"])  # abbreviations off: an unknown flag


# -- evaluate: the metric module ---------------------------------------------------------------------------------------


@binds("_info", "_compute", "PairwiseAccuracy._info", "PairwiseAccuracy._compute")
def test_metric_module() -> None:
    # An evaluate metric is these two methods; evaluate.load runs our module file as one.
    for name in ("_info", "_compute"):
        assert callable(getattr(evaluate.Metric, name, None)), f"evaluate.Metric.{name} is gone"
    metric = evaluate.load(str(PACKAGE / "evaluation" / "metric_modules" / "pairwise_accuracy"))
    result = metric.compute(chosen_scores=[1.0, 0.5, 2.0], rejected_scores=[0.0, 0.5, 3.0])
    assert result == {"pairwise_accuracy": 1 / 3, "num_pairs": 3, "num_correct": 1, "num_ties": 1}
