"""Champion against challenger: the statistics on arrays with a known answer, and pairing from the log."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score, roc_auc_score

from tasks.monitoring import variants
from tasks.monitoring.variants import ComparisonPolicy

POLICY = ComparisonPolicy(min_labelled=200, resamples=500, max_looks=4)


def scored(n: int, champion_signal: float, challenger_signal: float, seed: int = 0):
    """Labels and two models' scores: each model sees the label through its own signal strength, plus noise
    shared by both (the hard rows are hard for both) and noise of its own."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    shared = rng.normal(size=n)
    champion = champion_signal * labels + shared + 0.5 * rng.normal(size=n)
    challenger = challenger_signal * labels + shared + 0.5 * rng.normal(size=n)
    return np.where(labels, "Yes", "No"), champion, challenger


def test_a_clearly_better_a_clearly_worse_and_an_equal_challenger_get_their_verdicts():
    truth, weak, strong = scored(3000, 1.0, 1.6)
    better = variants.compare_paired(truth, weak, strong, "binary", POLICY)
    assert better.verdict == "better" and better.effect > 0 and better.interval[0] > 0, better.reason
    assert better.challenger == pytest.approx(roc_auc_score(truth == "Yes", strong))
    assert variants.compare_paired(truth, strong, weak, "binary", POLICY).verdict == "worse"
    same = variants.compare_paired(truth, weak, weak + 1e-9, "binary", POLICY)
    assert same.verdict == "unknown" and same.reason.startswith("not yet known")


def test_an_unpaired_a_b_split_is_judged_from_its_two_samples():
    truth, weak, strong = scored(6000, 1.0, 1.8, seed=2)
    half = len(truth) // 2
    result = variants.compare_unpaired(truth[:half], weak[:half], truth[half:], strong[half:], "binary", POLICY)
    assert result.kind == "unpaired" and result.labelled == (half, half) and result.verdict == "better", result.reason


def test_too_few_labels_is_not_yet_known_and_an_unplanned_look_is_refused():
    truth, weak, strong = scored(150, 1.0, 3.0)
    early = variants.compare_paired(truth, weak, strong, "binary", POLICY)
    assert early.verdict == "unknown" and "150 labelled records < min_labelled 200" in early.reason
    with pytest.raises(ValueError, match="look 5 of a comparison planned for 4"):
        variants.compare_paired(truth, weak, strong, "binary", POLICY, look=5)


def test_the_vectorised_resampled_metrics_are_the_library_metrics_on_the_same_draws():
    truth, weak, _ = scored(400, 1.0, 1.0, seed=3)
    weak = np.round(weak, 1)  # ties, which count half
    weights = variants._bootstrap_weights(400, 5, np.random.default_rng(0))
    assert (weights.sum(axis=1) == 400).all()
    drawn = [np.repeat(np.arange(400), counts) for counts in weights]
    aucs = variants._resampled(truth, weak, weights, "binary", "Yes")
    assert aucs == pytest.approx([roc_auc_score(truth[i] == "Yes", weak[i]) for i in drawn])
    values = np.random.default_rng(1).normal(size=400)
    r2 = variants._resampled(values, values * 0.8, weights, "regression", None)
    assert r2 == pytest.approx([r2_score(values[i], values[i] * 0.8) for i in drawn])


def test_regression_and_multiclass_compare_too():
    rng = np.random.default_rng(4)
    truth = rng.normal(size=1000)
    close, far = truth + 0.3 * rng.normal(size=1000), truth + 0.9 * rng.normal(size=1000)
    assert variants.compare_paired(truth, far, close, "regression", POLICY).verdict == "better"
    classes = rng.choice(["a", "b", "c"], size=600)
    right = np.where(rng.random(600) < 0.9, classes, "a")
    wrong = np.where(rng.random(600) < 0.5, classes, "b")
    small = POLICY.model_copy(update={"resamples": 200})
    assert variants.compare_paired(classes, wrong, right, "multiclass", small).verdict == "better"


def test_shadowed_records_are_paired_from_the_log_and_agreement_is_measured_before_labels():
    log = pd.DataFrame(
        {
            "request_id": ["r1", "r1", "r1", "r1", "r2"],
            "record_index": [0, 1, 0, 1, 0],
            "variant": ["champion", "champion", "shadow", "shadow", "champion"],
            "model_version": ["1", "1", "2", "2", "1"],
            "prediction": ["No", "Yes", "No", "No", "Yes"],
            "probability_Yes": [0.2, 0.9, 0.1, 0.4, 0.7],
        }
    )
    pairs = variants.paired_rows(log)
    assert len(pairs) == 2 and list(pairs["challenger_model_version"]) == ["2", "2"]
    assert list(pairs["challenger_probability_Yes"]) == [0.1, 0.4]
    seen = variants.agreement(
        pairs["prediction"],
        pairs["challenger_prediction"],
        pairs["probability_Yes"],
        pairs["challenger_probability_Yes"],
    )
    assert (seen.records, seen.agreement) == (2, 0.5)


def _squash(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def logged(variant: str, version: str, scores: np.ndarray, request_ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "request_id": request_ids,
            "record_index": 0,
            "variant": variant,
            "model_version": version,
            "prediction": (scores > 0.5).astype(int),
            "probability_0": 1 - scores,
            "probability_1": scores,
        }
    )


def test_the_monitor_step_judges_a_shadow_and_an_a_b_challenger_on_the_late_labels(tmp_path, monkeypatch):
    from tasks.settings import get_settings
    from tasks.steps.monitor import Champion, compare_variants, load_labels

    monkeypatch.setenv("TABLOOP_STORAGE_URL", str(tmp_path))
    truth, weak, strong = scored(3000, 1.0, 1.8, seed=5)
    ids = [f"r{i}" for i in range(3000)]
    shadowed = pd.concat(
        [
            logged("champion", "1", _squash(weak[:1500]), ids[:1500]),
            logged("shadow", "2", _squash(strong[:1500]), ids[:1500]),
        ]
    )
    split = pd.concat(
        [
            logged("champion", "1", _squash(weak[1500:2250]), ids[1500:2250]),
            logged("challenger", "3", _squash(strong[2250:]), ids[2250:]),
        ]
    )
    pd.DataFrame({"request_id": ids, "churned": (truth == "Yes").astype(int)}).to_parquet(tmp_path / "labels.parquet")
    champion = Champion("churn", "1", "run", binary_contract(), 0.8)
    uri = str(tmp_path / "labels.parquet")
    labels = load_labels.fn(uri, None, get_settings())
    policy = ComparisonPolicy(min_labelled=300, resamples=500)
    (shadow,) = compare_variants(shadowed, labels, champion, policy)
    assert (shadow.variant, shadow.version, shadow.records, shadow.comparison.kind) == ("shadow", "2", 1500, "paired")
    assert shadow.comparison.verdict == "better" and shadow.agreement.records == 1500, shadow.line()
    (ab,) = compare_variants(split, labels, champion, policy)
    assert (ab.variant, ab.version, ab.comparison.labelled) == ("challenger", "3", (750, 750))
    assert ab.comparison.verdict == "better", ab.line()
    (unlabelled,) = compare_variants(shadowed, None, champion, policy)
    assert unlabelled.comparison.verdict == "unknown" and "0 labelled records" in unlabelled.comparison.reason


def binary_contract():
    from tests.unit.test_contract import demo_contract

    return demo_contract(classes=[0, 1], positive_class=1)


@pytest.mark.parametrize("spending", ["late", "even"])
def test_the_looks_spend_exactly_the_false_win_budget(spending):
    policy = ComparisonPolicy(alpha=0.05, max_looks=4, spending=spending)
    levels = [policy.level(look) for look in range(1, 5)]
    assert sum(levels) == pytest.approx(0.05)
    if spending == "even":
        assert levels == pytest.approx([0.0125] * 4)
    else:  # little early, most where the data is
        assert levels == sorted(levels) and levels[0] < 0.001 and levels[-1] > 0.5 * 0.05
