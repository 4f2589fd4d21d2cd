"""The quality gate: what a new version must achieve before it becomes @champion. Pure: no registry here."""

from __future__ import annotations

from dataclasses import dataclass, replace

from pydantic import BaseModel, Field


class GatePolicy(BaseModel):
    """What a new version must achieve before it becomes @champion."""

    min_primary: float = Field(0.6, description="Absolute floor for the primary held-out metric.")
    min_metrics: dict[str, float] = Field(default_factory=dict, description="Other floors, e.g. {'recall': 0.5}.")
    max_metrics: dict[str, float] = Field(default_factory=dict, description="Ceilings, e.g. {'log_loss': 0.6}.")
    margin: float = Field(0.0, ge=0, description="How much the primary metric must beat the champion's by.")
    require_approval: bool = Field(
        False, description="A version that passes the gate waits for a person to approve it in the Prefect UI."
    )
    approval_timeout_s: int = Field(
        86400, ge=1, description="No answer within this long means not promoted (the run holds its worker meanwhile)."
    )


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reasons: list[str]
    candidate_primary: float
    champion_primary: float | None
    champion_version: str | None


def decide(
    candidate: dict[str, float], champion: dict[str, float] | None, champion_version: str | None, policy: GatePolicy
) -> GateDecision:
    """Compare the candidate's held-out metrics with the floors and with the champion's on the same data."""
    failed, passed = [], []
    floors = {"primary": policy.min_primary, **policy.min_metrics}
    for name, floor in floors.items():
        value = candidate.get(name)
        (passed if value is not None and value >= floor else failed).append(
            f"{name} {_fmt(value)} {'>=' if value is not None and value >= floor else '<'} floor {floor:g}"
        )
    for name, ceiling in policy.max_metrics.items():
        value = candidate.get(name)
        ok = value is not None and value <= ceiling
        (passed if ok else failed).append(f"{name} {_fmt(value)} {'<=' if ok else '>'} ceiling {ceiling:g}")
    champion_primary = None if champion is None else champion["primary"]
    if champion_primary is None:
        passed.append("no current champion to beat")
    else:
        needed = champion_primary + policy.margin
        beats = candidate["primary"] > needed or (policy.margin == 0 and candidate["primary"] > champion_primary)
        (passed if beats else failed).append(
            f"primary {candidate['primary']:.4f} {'beats' if beats else 'does not beat'} champion "
            f"v{champion_version} {champion_primary:.4f} + margin {policy.margin:g} on the same held-out data"
        )
    return GateDecision(not failed, failed or passed, candidate["primary"], champion_primary, champion_version)


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"


def with_approval(decision: GateDecision, approved: bool, why: str) -> GateDecision:
    """The gate's decision after a person's answer (or the lack of one)."""
    reasons = [*decision.reasons, why] if approved else [why]
    return replace(decision, promote=approved, reasons=reasons)
