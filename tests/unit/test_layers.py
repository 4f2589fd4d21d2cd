"""The import direction (pyproject's import-linter contracts) holds, and breaking it fails the check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("deployments", "flows", "serving", "tasks")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # the copy's packages first on the path: the editable install would otherwise answer for them
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": str(Path(sys.executable).parent)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_of_project(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_its_import_contracts(tmp_path):
    result = lint_imports(copy_of_project(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_tasks_importing_serving_breaks_the_contract(tmp_path):
    tree = copy_of_project(tmp_path)
    storage = tree / "tasks" / "store" / "storage.py"
    storage.write_text(storage.read_text() + "\nimport serving.routing  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "deployments -> flows -> serving -> tasks BROKEN" in result.stdout
    assert "tasks.store.storage -> serving.routing" in result.stdout


def test_framework_logic_importing_the_demo_breaks_the_contract(tmp_path):
    tree = copy_of_project(tmp_path)
    features = tree / "tasks" / "model" / "features.py"
    features.write_text(features.read_text() + "\nfrom tasks import demo  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode != 0 and "tasks.model.features -> tasks.demo" in result.stdout
