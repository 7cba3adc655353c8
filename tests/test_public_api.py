"""The public API: one import path per public name (the one README and docs/ use), and HF-style docstrings (a
summary, `Args:`, `Returns:`, `Example:`) whose examples run as written."""

from __future__ import annotations

import ast
import doctest
import importlib
import inspect
import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import REPO, build_tiny_model

# Each public name and its one documented import path.
PUBLIC = {
    "RewardScorer": "pipeline",
    "RewardFunction": "pipeline",
    "build_dataset": "pipeline.data",
    "read_pairs": "pipeline.data",
    "ScriptArguments": "pipeline.recipe.config",
    "PipelineRewardConfig": "pipeline.recipe.config",
    "ScorerArguments": "pipeline.model.arguments",
}
# The package and its steps: the places a name could be re-exported from.
STEPS = sorted(p.name for p in (REPO / "pipeline").iterdir() if (p / "__init__.py").is_file())
FACADES = ["pipeline"] + [f"pipeline.{step}" for step in STEPS]
# What needs each section: every documented callable an Example, those with parameters Args, those returning a value
# Returns (a class documents its constructor's Args in its own docstring, as transformers does).
DOCUMENTED = [
    "pipeline.RewardScorer",
    "pipeline.RewardScorer.from_pretrained",
    "pipeline.RewardScorer.score",
    "pipeline.RewardScorer.score_pairs",
    "pipeline.RewardScorer.standardize",
    "pipeline.RewardScorer.reward_stats",
    "pipeline.RewardFunction",
    "pipeline.RewardFunction.from_pretrained",
    "pipeline.data.build_dataset",
    "pipeline.data.read_pairs",
    "pipeline.recipe.config.ScriptArguments",
    "pipeline.recipe.config.PipelineRewardConfig",
    "pipeline.model.arguments.ScorerArguments",
    "pipeline.model.arguments.ScorerArguments.add_to",
]


def resolve(dotted: str):
    """The object of a documented name: `module.Name` or `module.Name.member` (a property as itself)."""
    for cut in range(dotted.count("."), 0, -1):
        module, *names = dotted.rsplit(".", cut)
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        for name in names:
            obj = inspect.getattr_static(obj, name) if inspect.isclass(obj) else getattr(obj, name)
        return obj.__func__ if isinstance(obj, classmethod) else obj.fget if isinstance(obj, property) else obj
    raise AssertionError(dotted)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_each_public_name_is_importable_from_exactly_its_documented_path(name: str) -> None:
    path = PUBLIC[name]
    obj = getattr(importlib.import_module(path), name)
    defining = importlib.import_module(obj.__module__)
    assert getattr(defining, name) is obj
    exported = {facade for facade in FACADES if hasattr(importlib.import_module(facade), name)}
    assert exported == ({path} if path in FACADES else set()), f"{name}: importable from {sorted(exported)}"
    module = importlib.import_module(path)
    if hasattr(module, "__all__"):
        assert name in module.__all__


def test_pipeline_all_is_the_public_names_it_exports() -> None:
    import pipeline

    assert sorted(pipeline.__all__) == sorted(n for n, p in PUBLIC.items() if p == "pipeline")


def test_readme_and_docs_import_each_public_name_from_its_path() -> None:
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    found = 0
    for page in pages:
        for module, names in re.findall(r"^\s*from (pipeline[\w.]*) import ([\w, ]+)$", page.read_text(), re.M):
            for name in (n.strip() for n in names.split(",")):
                if name in PUBLIC:
                    found += 1
                    assert module == PUBLIC[name], f"{page.name}: from {module} import {name}; use {PUBLIC[name]}"
    assert found >= 2  # the README's RewardFunction and docs/scoring.md's RewardScorer


def test_package_code_imports_public_names_from_their_defining_module() -> None:
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in ("pipeline", "pipeline.score"):
                names = {alias.name for alias in node.names} & {"RewardScorer", "RewardFunction"}
                assert not names, f"{path.relative_to(REPO)} imports {names} from {node.module}"


@pytest.mark.parametrize("dotted", DOCUMENTED)
def test_public_docstrings_have_a_summary_args_returns_and_an_example(dotted: str) -> None:
    obj = resolve(dotted)
    doc = inspect.getdoc(obj)
    assert doc and doc.splitlines()[0].endswith("."), f"{dotted}: no one-line summary"
    assert "\nExample:\n" in doc and ">>> " in doc, f"{dotted}: no Example"
    signature = inspect.signature(obj)
    if [name for name in signature.parameters if name not in ("self", "cls")]:
        assert "\nArgs:\n" in doc, f"{dotted}: no Args"
    if not inspect.isclass(obj) and signature.return_annotation not in ("None", None, inspect.Signature.empty):
        assert "\nReturns:\n" in doc, f"{dotted}: no Returns"


@pytest.fixture(scope="module")
def example_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as the examples assume one: a trained model in reward_model/ (its reward statistics stored as
    training stores them) and the shipped data/answers.csv."""
    folder = tmp_path_factory.mktemp("examples")
    model = build_tiny_model(folder / "reward_model")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "reward_mean": 0.25, "reward_std": 0.75}))
    (folder / "data").mkdir()
    shutil.copy(REPO / "data" / "answers.csv", folder / "data" / "answers.csv")
    return folder


@pytest.mark.parametrize("dotted", DOCUMENTED)
def test_public_docstring_examples_run_as_written(dotted: str, example_folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(example_folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    doc = inspect.getdoc(resolve(dotted))
    code = "\n".join("" if line.strip().startswith("```") else line for line in doc.splitlines())
    test = doctest.DocTestParser().get_doctest(code, {}, dotted, dotted, 0)
    assert test.examples, f"{dotted}: no >>> example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures: list[str] = []
    runner.run(test, out=failures.append)
    assert not runner.failures, "".join(failures)
