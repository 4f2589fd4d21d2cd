"""Champion against challenger on live traffic: the difference in the primary metric, its interval, a verdict.

- Shadow traffic is paired: both versions answered the same records, so one bootstrap resample of records
  scores both, and what the two share (the same hard and easy rows) cancels out of the difference.
- A/B traffic is unpaired: each arm is resampled on its own.
- Before labels come back: how often the two agree, and how far apart their score distributions are (KS;
  for class labels, the total variation distance of the class shares).

Repeated looks. A rollout looks at growing data once per step, and each look could declare a false win. The
policy fixes the number of looks in advance (`max_looks`, the rollout's steps) and a budget `alpha` for false
wins over all of them; look k may spend alpha_k of it, one-sided: the challenger is better when the lower
bound of a 1 - 2 alpha_k interval of the difference is above the margin, worse when the upper bound is below 0.
The alpha_k add up to alpha, so by the union bound a challenger no better than the champion is declared better,
at any of the looks, with probability at most alpha, however the looks are correlated (and declared worse at
most alpha too). `spending="late"` (the default) spends little early and most at the last look, which is
where the data is; `"even"` is Bonferroni. More looks than planned are refused instead of silently raising that
rate. benchmarks/variant_decisions.py measures both error rates by simulation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field
from scipy import stats

from tasks.model.metrics import (
    TaskType,
    class_labels,
    positive_class,
    positive_mask,
    primary_metric,
    score_output,
)

Verdict = Literal["better", "worse", "unknown"]


class ComparisonPolicy(BaseModel):
    """How much evidence a verdict needs."""

    min_labelled: int = Field(500, ge=10, description="Labelled records per arm (pairs, for shadow) before a verdict.")
    alpha: float = Field(
        0.025,
        gt=0,
        lt=0.5,
        description="Chance of declaring a challenger of the champion's quality better, over all the looks "
        "together (one-sided: 0.025 is the usual two-sided 5%); the same budget bounds declaring it worse.",
    )
    max_looks: int = Field(4, ge=1, description="Looks planned at the growing data (a rollout's steps).")
    spending: Literal["late", "even"] = Field(
        "late",
        description="How alpha is spread over the looks: late (little early, most at the last look: "
        "alpha * ((k/K)^3 - ((k-1)/K)^3), close to O'Brien-Fleming) or even (alpha / K each, Bonferroni).",
    )
    margin: float = Field(0.0, ge=0, description="The challenger must be better by more than this to win.")
    resamples: int = Field(2000, ge=100, description="Bootstrap resamples per look.")
    seed: int = 0

    def level(self, look: int) -> float:
        """The error rate look `look` may spend in each direction (one-sided); over the planned looks they
        add up to alpha, so by the union bound the looks together stay within it."""
        if self.spending == "even":
            return self.alpha / self.max_looks
        return self.alpha * ((look / self.max_looks) ** 3 - ((look - 1) / self.max_looks) ** 3)


@dataclass(frozen=True)
class Comparison:
    kind: Literal["paired", "unpaired"]
    metric: str
    look: int
    labelled: tuple[int, int]  # champion's, challenger's (equal when paired)
    champion: float | None
    challenger: float | None
    effect: float | None  # challenger - champion; higher is better for every primary metric
    interval: tuple[float, float] | None
    verdict: Verdict
    reason: str


@dataclass(frozen=True)
class Agreement:
    """Before labels: the share of records both answered alike, and the distance of their scores."""

    records: int
    agreement: float | None
    score_shift: float


def compare_paired(
    truth: np.ndarray,
    champion: np.ndarray,
    challenger: np.ndarray,
    task_type: TaskType,
    policy: ComparisonPolicy,
    look: int = 1,
    positive: Any = None,
) -> Comparison:
    """Shadow: `champion[i]` and `challenger[i]` answered the same record, whose label is `truth[i]`."""
    truth, champion, challenger = np.asarray(truth), np.asarray(champion), np.asarray(challenger)
    n = len(truth)
    early = _too_early("paired", task_type, look, (n, n), policy)
    if early is not None:
        return early
    weights = _bootstrap_weights(n, policy.resamples, np.random.default_rng([policy.seed, look]))
    differences = _resampled(truth, challenger, weights, task_type, positive) - _resampled(
        truth, champion, weights, task_type, positive
    )
    return _judged("paired", task_type, look, (n, n), truth, champion, truth, challenger, differences, policy, positive)


def compare_unpaired(
    champion_truth: np.ndarray,
    champion: np.ndarray,
    challenger_truth: np.ndarray,
    challenger: np.ndarray,
    task_type: TaskType,
    policy: ComparisonPolicy,
    look: int = 1,
    positive: Any = None,
) -> Comparison:
    """A/B: each arm answered its own records."""
    arms = [np.asarray(a) for a in (champion_truth, champion, challenger_truth, challenger)]
    sizes = (len(arms[0]), len(arms[2]))
    early = _too_early("unpaired", task_type, look, sizes, policy)
    if early is not None:
        return early
    rng = np.random.default_rng([policy.seed, look])
    resampled = [
        _resampled(truth, output, _bootstrap_weights(len(truth), policy.resamples, rng), task_type, positive)
        for truth, output in ((arms[0], arms[1]), (arms[2], arms[3]))
    ]
    return _judged("unpaired", task_type, look, sizes, *arms, resampled[1] - resampled[0], policy, positive)


def agreement(
    champion: np.ndarray, challenger: np.ndarray, champion_scores: np.ndarray, challenger_scores: np.ndarray
) -> Agreement:
    """Paired answers before any label: agreement of the predictions (None for regression, whose predictions
    are the scores) and the distance between the score distributions (distribution_shift)."""
    champion, challenger = np.asarray(champion), np.asarray(challenger)
    numeric = np.issubdtype(champion.dtype, np.floating)
    return Agreement(
        records=len(champion),
        agreement=None if numeric else float(np.mean(champion == challenger)),
        score_shift=distribution_shift(champion_scores, challenger_scores) or 0.0,
    )


def distribution_shift(champion: np.ndarray, challenger: np.ndarray) -> float | None:
    """The two-sample KS statistic of two score samples; for class labels (multiclass answers), the total
    variation distance of the class shares. Both lie in [0, 1]; None when a side is empty."""
    champion, challenger = np.asarray(champion), np.asarray(challenger)
    if len(champion) == 0 or len(challenger) == 0:
        return None
    if np.issubdtype(champion.dtype, np.number) and np.issubdtype(challenger.dtype, np.number):
        return float(stats.ks_2samp(champion.astype(float), challenger.astype(float)).statistic)
    shares = [pd.Series(side).astype(str).value_counts(normalize=True) for side in (champion, challenger)]
    return float(shares[0].sub(shares[1], fill_value=0).abs().sum() / 2)


def paired_rows(
    log: pd.DataFrame, champion_variant: str = "champion", challenger_variant: str = "shadow"
) -> pd.DataFrame:
    """The prediction log's shadowed records side by side: one row per record both variants answered, with the
    champion's columns and the challenger's under a `challenger_` prefix."""
    key = ["request_id", "record_index"]
    champion = log[log["variant"] == champion_variant]
    challenger = log[log["variant"] == challenger_variant]
    outputs = [
        c for c in challenger.columns if c == "prediction" or c.startswith("probability_") or c == "model_version"
    ]
    return champion.merge(
        challenger[key + outputs].rename(columns={c: f"challenger_{c}" for c in outputs}), on=key, how="inner"
    )


def challenger_side(pairs: pd.DataFrame) -> pd.DataFrame:
    """The paired rows as the challenger answered them: its `challenger_` columns in place of the champion's."""
    theirs = [c for c in pairs.columns if c.startswith("challenger_")]
    return pairs.drop(columns=[c.removeprefix("challenger_") for c in theirs], errors="ignore").rename(
        columns={c: c.removeprefix("challenger_") for c in theirs}
    )


def _too_early(
    kind: str, task_type: TaskType, look: int, sizes: tuple[int, int], policy: ComparisonPolicy
) -> Comparison | None:
    if look > policy.max_looks:
        raise ValueError(
            f"look {look} of a comparison planned for {policy.max_looks}: more looks than planned would raise "
            "the false-win rate above the policy's alpha; plan more looks (max_looks) instead"
        )
    if min(sizes) >= policy.min_labelled:
        return None
    reason = f"not yet known: {min(sizes)} labelled records < min_labelled {policy.min_labelled}"
    return Comparison(kind, primary_metric(task_type), look, sizes, None, None, None, None, "unknown", reason)  # type: ignore[arg-type]


def _judged(
    kind: str,
    task_type: TaskType,
    look: int,
    sizes: tuple[int, int],
    champion_truth: np.ndarray,
    champion: np.ndarray,
    challenger_truth: np.ndarray,
    challenger: np.ndarray,
    differences: np.ndarray,
    policy: ComparisonPolicy,
    positive: Any,
) -> Comparison:
    champion_score = score_output(champion_truth, champion, task_type, positive)
    challenger_score = score_output(challenger_truth, challenger, task_type, positive)
    level = policy.level(look)
    low, high = np.quantile(differences[np.isfinite(differences)], [level, 1 - level])
    effect = challenger_score - champion_score
    confidence = f"{1 - 2 * level:.4g}"
    span = f"{effect:+.4f} ({confidence} interval {low:+.4f} to {high:+.4f}; look {look} of {policy.max_looks})"
    if low > policy.margin:
        verdict, reason = "better", f"challenger better by {span}"
    elif high < 0:
        verdict, reason = "worse", f"challenger worse by {span}"
    else:
        verdict, reason = "unknown", f"not yet known: difference {span}"
    return Comparison(
        kind,  # type: ignore[arg-type]
        primary_metric(task_type),
        look,
        sizes,
        champion_score,
        challenger_score,
        effect,
        (float(low), float(high)),
        verdict,  # type: ignore[arg-type]
        reason,
    )


def _bootstrap_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each record is drawn in each resample (resamples x n counts, each row summing to n): the same
    draws as resampling indices, in a form the metrics below sum over without sorting each resample."""
    drawn = rng.integers(0, n, size=(resamples, n)) + np.arange(resamples)[:, None] * n
    return np.bincount(drawn.ravel(), minlength=resamples * n).reshape(resamples, n)


def _resampled(
    truth: np.ndarray, output: np.ndarray, weights: np.ndarray, task_type: TaskType, positive: Any
) -> np.ndarray:
    """The primary metric on each resample (a row of `weights`); ROC AUC and R² vectorised, macro F1 per row."""
    if task_type == "binary":
        labels = positive_mask(truth, positive if positive is not None else positive_class(class_labels(truth)))
        return _weighted_auc(labels, np.asarray(output, float), weights)
    if task_type == "regression":
        y, p = np.asarray(truth, float), np.asarray(output, float)
        total_weight = weights.sum(axis=1, keepdims=True)
        mean = (weights * y).sum(axis=1, keepdims=True) / total_weight
        residual = (weights * (y - p) ** 2).sum(axis=1)
        total = (weights * (y - mean) ** 2).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1 - residual / total
    truth_text, output_text = np.asarray(truth).astype(str), np.asarray(output).astype(str)
    rows = [np.repeat(np.arange(len(truth_text)), counts) for counts in weights]
    return np.array([score_output(truth_text[row], output_text[row], "multiclass") for row in rows])


def _weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mann-Whitney ROC AUC of each weighting (ties count half), from one sort of the scores; NaN for a
    weighting with one class only."""
    order = np.argsort(scores, kind="stable")
    ordered, positive = scores[order], labels[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # groups of equal scores
    w = weights[:, order]
    positives = np.add.reduceat(w * positive, starts, axis=1)
    negatives = np.add.reduceat(w * ~positive, starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (positives * (below + 0.5 * negatives)).sum(axis=1) / pairs
