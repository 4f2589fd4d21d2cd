"""When to retrain: a typed policy and a pure decision with its reasons."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, Field


class MonitorPolicy(BaseModel):
    drift_share: float = Field(0.3, gt=0, le=1, description="Share of drifted feature columns that is drift.")
    max_performance_drop: float = Field(
        0.05,
        ge=0,
        description="Allowed fall of the live primary metric below the champion's held-out score before retraining.",
    )
    min_samples: int = Field(200, ge=1, description="Fewer logged predictions than this: no verdict.")
    cooldown_hours: float = Field(24, ge=0, description="No retrain sooner than this after the last one.")
    max_retrains_per_day: int = Field(2, ge=0)


@dataclass(frozen=True)
class MonitorDecision:
    retrain: bool
    reasons: list[str]
    drift_detected: bool
    performance_dropped: bool | None  # None when no labels arrived


def decide(
    *,
    samples: int,
    drift_share: float,
    live_primary: float | None,
    champion_primary: float | None,
    labelled: int,
    retrains: list[datetime],
    now: datetime,
    policy: MonitorPolicy,
) -> MonitorDecision:
    if samples < policy.min_samples:
        return MonitorDecision(
            False, [f"skipped: {samples} predictions < min_samples {policy.min_samples}"], False, None
        )
    reasons = []
    drifted = drift_share >= policy.drift_share
    reasons.append(f"drift share {drift_share:.2f} {'>=' if drifted else '<'} threshold {policy.drift_share:.2f}")
    dropped = None
    if live_primary is not None and champion_primary is not None:
        floor = champion_primary - policy.max_performance_drop
        dropped = live_primary < floor
        reasons.append(
            f"live primary {live_primary:.4f} {'<' if dropped else '>='} champion held-out "
            f"{champion_primary:.4f} - allowed drop {policy.max_performance_drop:g}"
        )
    else:
        reasons.append("no labels in the window: performance not checked")
    if not drifted and not dropped:
        return MonitorDecision(False, [*reasons, "no retrain: nothing crossed a threshold"], drifted, dropped)
    last = max(retrains, default=None)
    if last is not None and now - last < timedelta(hours=policy.cooldown_hours):
        return MonitorDecision(
            False,
            [
                *reasons,
                f"skipped: last retrain {last.isoformat(timespec='seconds')} is "
                f"within the {policy.cooldown_hours:g} h cooldown",
            ],
            drifted,
            dropped,
        )
    today = [r for r in retrains if now - r < timedelta(days=1)]
    if len(today) >= policy.max_retrains_per_day:
        return MonitorDecision(
            False,
            [*reasons, f"skipped: {len(today)} retrains in the last 24 h, at most {policy.max_retrains_per_day}"],
            drifted,
            dropped,
        )
    if labelled == 0:  # a retrain adds the window's labelled rows to the champion's own training data
        return MonitorDecision(
            False,
            [
                *reasons,
                "no retrain: no labelled predictions in the window, so a retrain would learn from the champion's "
                "training data alone; send late labels (labels_uri) to retrain on what was served",
            ],
            drifted,
            dropped,
        )
    return MonitorDecision(True, [*reasons, "retrain"], drifted, dropped)
