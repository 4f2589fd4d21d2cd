"""The image and the users' CI template, linted as `make lint` lints them; a broken copy of each must fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKFLOW = ROOT / "templates" / "github" / "workflows" / "tabloop.yml"


def hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "hadolint"), str(path)], capture_output=True, text=True, timeout=60)


def workflow_check(path: Path) -> subprocess.CompletedProcess:
    command = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_the_dockerfile_passes_hadolint_and_a_root_image_on_latest_does_not(tmp_path):
    assert hadolint(ROOT / "Dockerfile").returncode == 0, hadolint(ROOT / "Dockerfile").stdout
    text = (ROOT / "Dockerfile").read_text()
    assert "\nUSER 10001:10001\n" in text  # not root
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace("FROM python:3.11.7-slim-bookworm", "FROM python:latest") + "USER root\n")
    result = hadolint(broken)
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3002" in result.stdout, result.stdout


def test_the_ci_template_is_a_valid_workflow_and_a_misspelt_key_is_not(tmp_path):
    assert workflow_check(WORKFLOW).returncode == 0, workflow_check(WORKFLOW).stdout
    broken = tmp_path / "tabloop.yml"
    shutil.copy(WORKFLOW, broken)
    broken.write_text(broken.read_text().replace("    runs-on: ubuntu-latest\n", "    run-on: ubuntu-latest\n", 1))
    assert workflow_check(broken).returncode != 0


def test_the_ci_template_calls_what_the_repository_has():
    workflow = WORKFLOW.read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("test-fast", "deploy", "setup"):
        assert f"make {target}" in workflow and f"\n{target}:" in makefile
    deployments = {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    assert "train/train-weekly" in workflow and "spec" in deployments["train-weekly"]["parameters"]
    assert "--report report.md" in workflow
