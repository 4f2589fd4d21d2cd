"""How often the variant comparison decides right, on simulated shadow traffic with a known effect.

    python benchmarks/variant_decisions.py [--runs 200] [--looks 500 1000 1500 2000] [--correlation 0.8]

Each run draws labelled, paired records (a 30% positive binary target) scored by a champion of ROC AUC 0.80
and a challenger of 0.83 ("better") or 0.80 ("same"), in the binormal model: score = d * label + shared noise
+ own noise, where the shared part (`--correlation` of the noise variance) is what two models trained on the
same data get wrong together. A rollout looks after each number of labelled records in `--looks` and stops at
the first verdict that is not "unknown". Targets: "better" found better in at least 90% of runs by 2,000
records; "same" declared better in at most 5% of runs, over all its looks.

Side by side on the same draws: "late" (the default spending: little alpha early, most at the last look),
"even" (Bonferroni, alpha / looks each), and the baseline "uncorrected": the same paired bootstrap with every
look at the full alpha, which is what a dashboard refreshed every step does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.monitoring import variants
from tasks.monitoring.variants import ComparisonPolicy

POSITIVE_RATE = 0.3


def separation(auc: float, variance: float) -> float:
    """The shift d of the positive class that gives this ROC AUC in the binormal model: AUC = Phi(d / sqrt(2 var))."""
    return float(stats.norm.ppf(auc) * np.sqrt(2 * variance))


def draw(n: int, champion_auc: float, challenger_auc: float, correlation: float, rng: np.random.Generator):
    labels = rng.random(n) < POSITIVE_RATE
    shared = np.sqrt(correlation) * rng.normal(size=n)
    own = np.sqrt(1 - correlation)
    champion = separation(champion_auc, 1.0) * labels + shared + own * rng.normal(size=n)
    challenger = separation(challenger_auc, 1.0) * labels + shared + own * rng.normal(size=n)
    return labels.astype(int), champion, challenger


def rollout(labels, champion, challenger, looks: list[int], policy: ComparisonPolicy) -> tuple[str, int | None]:
    """The first verdict that is not "unknown", and the look size it came at."""
    for number, size in enumerate(looks, start=1):
        result = variants.compare_paired(
            labels[:size], champion[:size], challenger[:size], "binary", policy, look=number, positive=1
        )
        if result.verdict != "unknown":
            return result.verdict, size
    return "unknown", None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--looks", type=int, nargs="+", default=[500, 1000, 1500, 2000])
    parser.add_argument("--correlation", type=float, default=0.8)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    looks = sorted(args.looks)
    late = ComparisonPolicy(min_labelled=looks[0], max_looks=len(looks), resamples=args.resamples)
    even = late.model_copy(update={"spending": "even"})
    naive = late.model_copy(update={"max_looks": 1})  # every look at the full alpha

    started = time.perf_counter()
    print(f"{args.runs} runs per scenario, looks at {looks} labelled pairs, noise correlation {args.correlation}")
    for scenario, challenger_auc in (("better by 0.03", 0.83), ("same quality", 0.80)):
        outcomes: dict[str, list[tuple[str, int | None]]] = {"late": [], "even": [], "uncorrected": []}
        for seed in range(args.runs):
            labels, champion, challenger = draw(
                looks[-1], 0.80, challenger_auc, args.correlation, np.random.default_rng(seed)
            )
            for method, policy in (("late", late), ("even", even)):
                seeded_policy = policy.model_copy(update={"seed": seed})
                outcomes[method].append(rollout(labels, champion, challenger, looks, seeded_policy))
            seeded = naive.model_copy(update={"seed": seed})
            verdicts = [
                variants.compare_paired(labels[:n], champion[:n], challenger[:n], "binary", seeded, positive=1).verdict
                for n in looks
            ]
            first = next(((v, n) for v, n in zip(verdicts, looks, strict=True) if v != "unknown"), ("unknown", None))
            outcomes["uncorrected"].append(first)
        print(f"\n{scenario} (champion 0.80, challenger {challenger_auc:.2f}):")
        print(f"  {'method':12} {'declared better':>16} {'declared worse':>15}   better by each look")
        for method, found in outcomes.items():
            better = np.mean([v == "better" for v, _ in found])
            worse = np.mean([v == "worse" for v, _ in found])
            by_look = [np.mean([v == "better" and n is not None and n <= size for v, n in found]) for size in looks]
            cumulative = "  ".join(f"{size}: {rate:.0%}" for size, rate in zip(looks, by_look, strict=True))
            print(f"  {method:12} {better:>16.1%} {worse:>15.1%}   {cumulative}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
