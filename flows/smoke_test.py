"""Smoke-test a promoted version on the live model API; roll back when the version itself is broken.

The `smoke-test-on-promotion` automation (deployments/automations.py) runs this on every
`tabloop.model.promoted` event. By hand:  python flows/smoke_test.py [--version 3] [--endpoint URL]

Passes when /ready names the version within `wait_s` and /predict answers the example logged with the model
exactly as the registered model does here. An endpoint that does not answer fails the run and leaves the alias
alone; a version that never comes up or answers differently is rolled back (when `rollback_on_failure`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow

from tasks import demo
from tasks.ops import events
from tasks.ops.shell import shell_run
from tasks.runtime import smoke
from tasks.settings import get_settings
from tasks.steps.promote import move_champion
from tasks.store import registry

ACTOR = "smoke-test"


@flow(name="smoke-test", log_prints=True)
def smoke_test(
    version: str | None = None,
    endpoint: str | None = None,
    wait_s: float = 120,
    rollback_on_failure: bool = True,
    model_name: str | None = None,
) -> str:
    settings = get_settings()
    client = registry.connect(settings)
    name, url = demo.model_name(model_name, settings.model_name), (endpoint or settings.serving_url).rstrip("/")
    champion = registry.current_champion(client, name)
    version = str(version or (champion.version if champion else ""))
    if not version:
        raise ValueError(f"{name} has no @champion to smoke-test")
    token = settings.api_token.get_secret_value() if settings.api_token else None
    try:
        summary = smoke.check(name, version, url, wait_s, token)
    except smoke.ModelFailure as failure:
        events.model_event(events.SMOKE_TEST_FAILED, name, version, reason=str(failure))
        current = registry.current_champion(client, name)
        if rollback_on_failure and current is not None and str(current.version) == version:
            moved = move_champion(client, name, None, True, f"smoke test failed: {failure}", ACTOR)
            raise smoke.ModelFailure(f"{failure}; rolled @champion back to v{moved.version}") from failure
        raise
    events.model_event(events.SMOKE_TEST_PASSED, name, version, endpoint=url)
    print(summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", help="default: the current @champion")
    parser.add_argument("--endpoint", help="default: TABLOOP_SERVING_URL")
    parser.add_argument("--wait-s", type=float, default=120)
    parser.add_argument("--no-rollback", action="store_true")
    parser.add_argument("--model", help="registered model; default TABLOOP_MODEL_NAME, else the demo's")
    args = parser.parse_args(argv)
    with shell_run():
        smoke_test(args.version, args.endpoint, args.wait_s, not args.no_rollback, args.model)


if __name__ == "__main__":
    main()
