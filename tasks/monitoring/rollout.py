"""A progressive rollout's policy and the checks of each step: pure, over rows of the prediction log.

A rollout shadows the challenger, then gives it a growing share of the traffic. At every check of a step it
looks at what the challenger did since the step began: how many of its requests failed (the champion
answered those instead), its p99 latency against the champion's, and how far its score distribution sits
from the champion's. A step passes once it has been held long enough and seen enough of the challenger's
requests with every check inside the policy; any check outside it stops the rollout at once. The labelled
verdict (tasks/monitoring/variants.py) is taken once per step, at its end: those are the looks its error
budget is planned for.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, field_validator

from tasks.monitoring.variants import Comparison, ComparisonPolicy, distribution_shift

Status = Literal["pass", "fail", "wait"]


@dataclass(frozen=True)
class Step:
    kind: Literal["shadow", "canary"]
    share: float  # of the traffic the challenger answers; a shadow answers none, it sees a copy of all
    hold_s: float

    @property
    def variant(self) -> str:
        """The challenger's rows in the prediction log during this step."""
        return "shadow" if self.kind == "shadow" else "challenger"

    @property
    def label(self) -> str:
        return "shadow" if self.kind == "shadow" else f"canary {self.share:.0%}"


class RolloutPolicy(BaseModel):
    """The steps of a rollout and what each must show before the next."""

    shadow_s: float = Field(600, ge=0, description="Time the challenger first shadows the champion; 0 skips it.")
    steps: list[float] = Field(
        default_factory=lambda: [5, 25, 50, 100],
        description="The challenger's share of traffic at each canary step, in percent; after the last, it is "
        "promoted.",
    )
    hold_s: float = Field(600, ge=0, description="Minimum time at each canary step.")
    min_requests: int = Field(200, ge=1, description="Challenger requests a step needs before it can pass.")
    max_step_s: float = Field(3600, gt=0, description="A step that has not seen min_requests by then stops.")
    check_every_s: float = Field(15, gt=0, description="How often a step is checked.")
    max_error_rate: float = Field(0.01, ge=0, le=1, description="Share of the challenger's requests that may fail.")
    max_p99_ratio: float = Field(1.5, gt=0, description="Challenger p99 latency at most this times the champion's,")
    p99_slack_ms: float = Field(5.0, ge=0, description="plus this, so that a fast model's jitter does not stop it.")
    max_score_shift: float = Field(
        0.25, gt=0, le=1, description="Largest distance between the two score distributions (KS; for classes, TV)."
    )
    require_better: bool = Field(
        False, description="Promote only once the labels show the challenger better; else not worse is enough."
    )
    comparison: ComparisonPolicy = Field(
        default_factory=ComparisonPolicy, description="Evidence for the labelled verdict; its looks are the steps."
    )
    require_approval: bool = Field(False, description="A person approves in the Prefect UI before the promotion.")
    approval_timeout_s: int = Field(86400, ge=1, description="No answer within this long means not promoted.")

    @field_validator("steps")
    @classmethod
    def _rising_to_all(cls, steps: list[float]) -> list[float]:
        if not steps or steps[-1] != 100 or any(b <= a for a, b in pairwise(steps)):
            raise ValueError(f"steps must rise and end at 100 (percent), not {steps}")
        if steps[0] <= 0:
            raise ValueError(f"steps are shares above 0 percent, not {steps}")
        return steps

    def plan(self) -> list[Step]:
        shadow = [Step("shadow", 0.0, self.shadow_s)] if self.shadow_s > 0 else []
        return shadow + [Step("canary", percent / 100, self.hold_s) for percent in self.steps]

    def looks(self) -> ComparisonPolicy:
        """The comparison policy with one planned look per step."""
        return self.comparison.model_copy(update={"max_looks": len(self.plan())})


@dataclass(frozen=True)
class StepStats:
    """What the challenger did during a step, beside the champion (whose figures may span the whole rollout)."""

    requests: int  # the challenger's requests: answered or failed
    errors: int
    p99_ms: float | None
    champion_p99_ms: float | None
    score_shift: float | None  # distance between the two score distributions
    first_error: str | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class StepCheck:
    status: Status
    reasons: list[str]


def per_request(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per request and variant: latency and failure are per request, rows are per record."""
    return rows.drop_duplicates(subset=["request_id", "variant"])


def p99(requests: pd.DataFrame) -> float | None:
    if "latency_ms" not in requests.columns:
        return None
    latency = requests["latency_ms"].dropna().astype(float)
    return float(np.percentile(latency, 99)) if len(latency) else None


def failed(rows: pd.DataFrame) -> pd.Series:
    if "error" not in rows.columns:
        return pd.Series(False, index=rows.index)
    return rows["error"].notna()


def step_stats(
    champion_rows: pd.DataFrame,
    challenger_rows: pd.DataFrame,
    champion_scores: np.ndarray,
    challenger_scores: np.ndarray,
) -> StepStats:
    """The step's figures from the champion's and the challenger's log rows and their scores (what the
    primary metric reads: the positive class's probability, the predicted class, or the value)."""
    requests = per_request(challenger_rows)
    failures = requests[failed(requests)]
    answered = requests[~failed(requests)]
    first_error = str(failures["error"].iloc[0]) if len(failures) else None
    return StepStats(
        requests=len(requests),
        errors=len(failures),
        p99_ms=p99(answered),
        champion_p99_ms=p99(per_request(champion_rows)),
        score_shift=distribution_shift(champion_scores, challenger_scores),
        first_error=first_error,
    )


def check_step(stats: StepStats, step: Step, elapsed_s: float, policy: RolloutPolicy) -> StepCheck:
    """Fail on any check outside the policy (once the step has seen enough of the challenger to judge); pass
    once it has been held long enough and seen enough; else wait."""
    if stats.requests < policy.min_requests:
        if elapsed_s > policy.max_step_s:
            seen = f"{stats.requests} challenger requests in {elapsed_s:.0f} s"
            return StepCheck("fail", [f"{step.label}: {seen}, fewer than the {policy.min_requests} it needs"])
        return StepCheck("wait", [f"{step.label}: {stats.requests}/{policy.min_requests} challenger requests"])
    failures, fine = [], []
    rate = f"error rate {stats.error_rate:.2%} over {stats.requests} requests"
    if stats.error_rate > policy.max_error_rate:
        failures.append(f"{rate} > {policy.max_error_rate:.2%}" + (f" ({stats.first_error})" if stats.errors else ""))
    else:
        fine.append(f"{rate} <= {policy.max_error_rate:.2%}")
    if stats.p99_ms is not None and stats.champion_p99_ms is not None:
        ceiling = stats.champion_p99_ms * policy.max_p99_ratio + policy.p99_slack_ms
        latency = f"p99 {stats.p99_ms:.1f} ms vs champion {stats.champion_p99_ms:.1f} ms"
        (failures if stats.p99_ms > ceiling else fine).append(
            f"{latency} {'>' if stats.p99_ms > ceiling else '<='} {ceiling:.1f} ms allowed"
        )
    if stats.score_shift is not None:
        shifted = stats.score_shift > policy.max_score_shift
        (failures if shifted else fine).append(
            f"score shift {stats.score_shift:.3f} {'>' if shifted else '<='} {policy.max_score_shift:g}"
        )
    if failures:
        return StepCheck("fail", [f"{step.label}: {reason}" for reason in failures])
    if elapsed_s < step.hold_s:
        return StepCheck("wait", [f"{step.label}: held {elapsed_s:.0f}/{step.hold_s:.0f} s"])
    return StepCheck("pass", [f"{step.label}: {reason}" for reason in fine])


def with_verdict(check: StepCheck, comparison: Comparison | None, step: Step) -> StepCheck:
    """A passed step's check after the step's look at the labels: a challenger found worse stops there."""
    if check.status != "pass" or comparison is None:
        return check
    line = f"{step.label}: {comparison.reason}"
    if comparison.verdict == "worse":
        return StepCheck("fail", [line])
    return StepCheck("pass", [*check.reasons, line])


def promotion_reasons(verdicts: list[Comparison], policy: RolloutPolicy) -> tuple[bool, list[str]]:
    """After the last step passed: promote, unless the policy asks for a labelled win that never came."""
    if any(v.verdict == "better" for v in verdicts):
        return True, ["the labels show the challenger better"]
    if policy.require_better:
        return False, ["not promoted: the policy requires the labels to show the challenger better, and they did not"]
    return True, ["every step passed; the labels did not show the challenger worse"]
