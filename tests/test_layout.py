"""The package's layout: each step imports only the steps before it (and core), never one after it."""

from __future__ import annotations

import ast

import pytest
from helpers import REPO

# recipe -> data -> model (encoding, scoring engine) -> training -> evaluation -> publishing -> score (use);
# cli, the commands users type, comes last: its train command orders training -> evaluation -> publishing.
ALLOWED = {
    "core": set(),
    "recipe": {"core"},
    "data": {"core", "recipe"},
    "model": {"core"},
    "training": {"core", "recipe", "data", "model"},
    "evaluation": {"core", "data", "model"},
    "publishing": {"core", "model", "evaluation"},
    "score": {"core", "data", "model"},
    "serve": {"core", "data", "model"},
    "cli": {"core", "recipe", "data", "model", "training", "evaluation", "publishing", "score", "serve"},
}
PACKAGE = REPO / "pipeline"


def imported_steps(path) -> set[str]:
    steps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "pipeline" and len(parts) > 1 and parts[1] in ALLOWED:
                steps.add(parts[1])
    return steps


@pytest.mark.parametrize("step", sorted(ALLOWED))
def test_a_step_imports_only_the_steps_before_it(step: str) -> None:
    for path in sorted((PACKAGE / step).rglob("*.py")):
        wrong = imported_steps(path) - ALLOWED[step] - {step}
        assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}, a later step of the pipeline"


def test_every_step_is_a_listed_subpackage_with_a_docstring() -> None:
    found = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert found == set(ALLOWED)
    for step in found:
        assert ast.get_docstring(ast.parse((PACKAGE / step / "__init__.py").read_text())), step
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "train.py"]  # the entry, nothing loose
