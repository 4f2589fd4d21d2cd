"""Human-readable documents: the model card and the gate decision, as Markdown."""

from __future__ import annotations

from typing import Any

from tasks.model.contract import ModelContract
from tasks.model.gate import GateDecision


def model_card(
    *,
    model_name: str,
    version: str,
    contract: ModelContract,
    metrics: dict[str, float],
    params: dict[str, Any],
    git_commit: str,
    decision: GateDecision | None = None,
) -> str:
    data, features, target = contract.data, contract.spec.columns, contract.target
    positive = f"; positive class `{contract.positive_class!r}`" if contract.positive_class is not None else ""
    classes = f"; classes {', '.join(f'`{c!r}`' for c in contract.classes)}" if contract.classes else ""
    left_out = "; ".join(f"`{name}` ({why})" for name, why in contract.excluded.items()) or "nothing"
    metric_rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()))
    param_rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(params.items()))
    gate = (
        ""
        if decision is None
        else (
            f"\n## Quality gate\n**{'passed' if decision.promote else 'rejected'}**\n\n"
            + "\n".join(f"- {r}" for r in decision.reasons)
            + "\n"
        )
    )
    return f"""# Model card: {model_name} v{version}

## Intended use
Scores `{target}` ({contract.task_type}{classes}{positive})
for rows shaped like the training data below. Use it to rank or flag records for a human or downstream
decision, at the volumes and on the population it was trained on.

## Data
- Dataset: `{data.dataset}`, version `{data.digest}` ({data.rows} rows), snapshot `{data.uri}`
- Features ({len(features)}): {", ".join(f"`{f}`" for f in features)}
- Left out: {left_out}
- Code: git commit `{git_commit}`

## Held-out metrics
Primary metric: `{contract.primary_metric}` (higher is better).

| metric | value |
|---|---|
{metric_rows}

## Parameters
| parameter | value |
|---|---|
{param_rows}
{gate}
## Limitations
- Trained on one snapshot; quality degrades when the input distribution or the relationship to the target
  drifts. The monitoring flow watches for that.
- Rows that fail the training schema (unknown categories, out-of-range values) are refused, not scored.
- Metrics come from a single held-out split; expect some variance on new data.
"""


def model_input_markdown(model_name: str, contract: ModelContract) -> str:
    """Each column of the training data and its role: a numeric or categorical feature, or left out and why."""
    kinds = {name: str(column.dtype) for name, column in contract.schema.columns.items()}
    roles = {name: "numeric feature" for name in contract.numeric} | {
        n: "categorical feature" for n in contract.categorical
    }
    rows = "\n".join(
        f"| `{name}` | {kinds[name]} | {roles.get(name, 'left out')} | {contract.excluded.get(name, '')} |"
        for name in kinds
    )
    dropped = contract.data.dropped_missing_target
    note = f"\n{dropped} rows without a target value were left out.\n" if dropped else ""
    if contract.features:
        listed = ", ".join(f"`{ref}`" for ref in contract.features)
        note += f"\nFrom the feature store, as of each row's time (looked up by id at serving): {listed}.\n"
    return f"""# {model_name}: the model's input

Target `{contract.target}` ({contract.task_type}); {len(contract.numeric)} numeric and
{len(contract.categorical)} categorical features.
{note}
| column | type | role | why left out |
|---|---|---|---|
{rows}
"""


def gate_markdown(model_name: str, version: str, decision: GateDecision, metrics: dict[str, float]) -> str:
    verdict = "promoted to **@champion**" if decision.promote else "**rejected**; @champion unchanged"
    champion = (
        f"v{decision.champion_version} scored {decision.champion_primary:.4f} on the same held-out data"
        if decision.champion_version
        else "there was no champion"
    )
    reasons = "\n".join(f"- {r}" for r in decision.reasons)
    metric_rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()))
    return f"""# {model_name} v{version}: {verdict}

Candidate primary metric {decision.candidate_primary:.4f}; {champion}.

## Why
{reasons}

## Candidate held-out metrics
| metric | value |
|---|---|
{metric_rows}
"""
