"""Create the work pool, deploy every deployment in prefect.yaml, and create the automations. Safe to run again.

python deployments/apply.py          # needs PREFECT_API_URL pointing at a Prefect server (or Cloud)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from deployments.automations import apply_automations  # noqa: E402

WORK_POOL = "tabloop-process"


def prefect(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).parent / "prefect"), "--no-prompt", *args]
    env = {**os.environ, "TABLOOP_PROJECT_DIR": os.environ.get("TABLOOP_PROJECT_DIR", str(ROOT))}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=check)


def apply() -> None:
    existing = prefect("work-pool", "inspect", WORK_POOL, check=False)
    if existing.returncode != 0:
        prefect("work-pool", "create", WORK_POOL, "--type", "process")
    result = prefect("deploy", "--all", check=False)
    if result.returncode != 0:
        raise SystemExit(f"prefect deploy failed:\n{result.stdout}\n{result.stderr}")
    names = [d["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]]
    print(f"deployments: {', '.join(names)}")
    print(f"automations: {', '.join(apply_automations())}")


if __name__ == "__main__":
    apply()
