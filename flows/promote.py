"""Promote a chosen model version to @champion, or roll back to the champion before the current one.

    python flows/promote.py --version 3 --reason "hotfix validated offline"
    python flows/promote.py --rollback --reason "p99 regression in production"

Both move the same alias the quality gate moves and leave who/when/why in the registry.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow

from tasks import demo
from tasks.ops.shell import shell_run
from tasks.settings import get_settings
from tasks.steps.promote import move_champion
from tasks.store import registry


@flow(name="promote", log_prints=True)
def promote(
    version: str | None = None,
    rollback: bool = False,
    reason: str = "",
    actor: str | None = None,
    model_name: str | None = None,
) -> registry.AuditEvent:
    if (version is None) == (not rollback):
        raise ValueError("give exactly one of: a version to promote, or rollback=True")
    if not reason.strip():
        raise ValueError("a reason is required: it goes into the audit trail")
    settings = get_settings()
    name = demo.model_name(model_name, settings.model_name)
    client = registry.connect(settings)
    event = move_champion(client, name, version, rollback, reason, actor or getpass.getuser())
    print(f"{name}: @champion v{event.previous} -> v{event.version} ({event.action} by {event.by})")
    return event


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--version", help="model version to make @champion")
    target.add_argument("--rollback", action="store_true", help="return to the previous champion")
    parser.add_argument("--reason", required=True)
    parser.add_argument("--model", help="registered model; default TABLOOP_MODEL_NAME, else the demo's")
    args = parser.parse_args(argv)
    with shell_run():
        promote(version=args.version, rollback=args.rollback, reason=args.reason, model_name=args.model)


if __name__ == "__main__":
    main()
