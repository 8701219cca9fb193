"""Model quality: the metrics equal scikit-learn's own on the same rows, the intervals hold the value, and the rule
fires exactly at its bounds (windows in a row, the floor, the margin, drift that persists)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    get_scorer,
    log_loss,
    mean_absolute_error,
    roc_auc_score,
    root_mean_squared_error,
)

from monitoring import quality
from training import contract as contracts
from training.contract import Category, Contract, Gate, Metric, Number, Target

RNG = np.random.default_rng(5)


def binary_rows(model, n: int, noise: float = 0.0, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    """Labelled predictions of a binary model: the label follows the probability, `noise` of them flipped."""
    rng = np.random.default_rng(seed)
    negative, positive = model.contract.target.classes
    p = rng.uniform(0, 1, n)
    truth = rng.uniform(0, 1, n) < p
    flip = rng.uniform(0, 1, n) < noise
    actual = np.where(truth ^ flip, positive, negative)
    frame = pd.DataFrame({"probability": p, "label": np.where(p >= 0.5, positive, negative),
                          model.contract.target.name: actual})
    return frame, p


def test_binary_metrics_are_scikit_learns_on_the_same_rows(model):
    contract = model.contract
    frame, p = binary_rows(model, 500)
    scored = quality.scored_rows(frame, contract)
    found = quality.metrics(scored, model.gate.measure)
    actual = frame[contract.target.name].to_numpy() == contract.target.positive
    assert found["roc_auc"] == pytest.approx(roc_auc_score(actual, p))
    assert found["pr_auc"] == pytest.approx(average_precision_score(actual, p))
    assert found["log_loss"] == pytest.approx(log_loss(actual, p))
    assert found["positive_rate"] == pytest.approx(actual.mean())
    assert found["predicted_positive_rate"] == pytest.approx((p >= 0.5).mean())
    # the gate's metric through its own scorer, on an estimator that answers what the service answered
    scorer_value = get_scorer(model.gate.name)(scored.estimator(), np.arange(500).reshape(-1, 1),
                                               frame[contract.target.name].to_numpy())
    assert found[model.gate.name] == pytest.approx(scorer_value)


def test_a_gate_of_the_teams_own_and_the_regression_metrics_are_scikit_learns():
    house = contracts.load("house-prices")
    n = 400
    y = RNG.uniform(100_000, 900_000, n)
    predicted = y * RNG.normal(1.0, 0.1, n)
    frame = pd.DataFrame({"prediction": predicted, house.contract.target.name: y})
    found = quality.metrics(quality.scored_rows(frame, house.contract), house.gate.measure)
    assert found["rmse"] == pytest.approx(root_mean_squared_error(y, predicted))
    assert found["mae"] == pytest.approx(mean_absolute_error(y, predicted))
    assert found["bias"] == pytest.approx(predicted.mean() - y.mean())
    assert house.gate.measure.function is not None
    assert found[house.gate.name] == pytest.approx(house.gate.measure.function(y, predicted))


MULTICLASS = Contract(features=(Number("size"), Category("colour", ("red", "blue"))),
                      target=Target("kind", "multiclass", ("a", "b", "c")), slices=("colour",))


def test_multiclass_metrics_are_scikit_learns():
    classes = list(MULTICLASS.target.classes or ())
    n = 300
    proba = RNG.dirichlet([1, 1, 1], n)
    y = np.array([classes[RNG.choice(3, p=row)] for row in proba])
    labels = np.array(classes)[proba.argmax(axis=1)]
    frame = pd.DataFrame({"label": labels, "probabilities": [json.dumps(dict(zip(classes, row, strict=True))) for row in proba],
                          "kind": y})
    found = quality.metrics(quality.scored_rows(frame, MULTICLASS), Metric.of("accuracy"))
    assert found["accuracy"] == pytest.approx(accuracy_score(y, labels))
    assert found["f1_macro"] == pytest.approx(f1_score(y, labels, average="macro"))
    assert found["log_loss"] == pytest.approx(log_loss(y, proba, labels=classes))
    assert found["roc_auc_ovr"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", labels=classes))


def test_a_metric_the_rows_cannot_define_is_left_out(model):
    frame, _ = binary_rows(model, 50)
    frame[model.contract.target.name] = model.contract.target.classes[0]  # one class only: no ROC-AUC
    found = quality.metrics(quality.scored_rows(frame, model.contract), model.gate.measure)
    assert "roc_auc" not in found and "log_loss" in found


def test_the_interval_holds_the_value_narrows_with_more_rows_and_repeats(model):
    def width(n: int) -> tuple[float, float, float]:
        frame, _ = binary_rows(model, n, seed=n)
        scored = quality.scored_rows(frame, model.contract)
        point = quality.metrics(scored, model.gate.measure)
        low, high = quality.intervals(scored, model.gate.measure, point, seed=3, resamples=100)["roc_auc"]
        assert low <= point["roc_auc"] <= high
        assert (low, high) == quality.intervals(scored, model.gate.measure, point, seed=3, resamples=100)["roc_auc"]
        return high - low, low, high

    assert width(2000)[0] < width(100)[0] / 2


def test_calibration_by_decile_is_the_observed_rate_against_the_mean_probability():
    p = np.array([0.05, 0.05, 0.15, 0.95, 0.99])
    actual = np.array([False, True, False, True, True])
    table = quality.calibration(actual, p)
    assert [(r["decile"], r["count"], r["observed"]) for r in table] == [(0, 2, 0.5), (1, 1, 0.0), (9, 2, 1.0)]
    assert quality.expected_calibration_error(actual, p) == pytest.approx(
        (2 * abs(0.5 - 0.05) + abs(0 - 0.15) + 2 * abs(1 - 0.97)) / 5)


def test_quality_is_reported_per_version_window_and_slice_of_the_contract(model):
    contract = model.contract
    assert contract.slices, "the example names a slice"
    slice_column = contract.slices[0]
    values = next(c for c in contract.categories if c.name == slice_column).values
    assert values is not None
    frames = []
    for version, hours in (("1", 0), ("1", 1), ("2", 1)):
        frame, _ = binary_rows(model, 240, seed=hash((version, hours)) % 1000)
        frame["model_version"] = version
        frame["scored_at"] = (pd.Timestamp("2026-12-07T00:10:00Z") + pd.Timedelta(hours=hours)).isoformat()
        frame[slice_column] = [values[i % 2] for i in range(len(frame))]
        frames.append(frame)
    table = quality.quality_table(pd.concat(frames), contract, model.gate.measure, pd.Timedelta("1h"),
                                  min_labelled=50, resamples=20)
    gate_rows = table[table["metric"] == model.gate.name]
    assert set(zip(gate_rows["model_version"], gate_rows["window"].astype(str), strict=True)) == {
        ("1", "2026-12-07 00:00:00+00:00"), ("1", "2026-12-07 01:00:00+00:00"), ("2", "2026-12-07 01:00:00+00:00")}
    assert set(gate_rows["slice"]) == {quality.ALL, f"{slice_column}={values[0]}", f"{slice_column}={values[1]}"}
    assert (gate_rows.loc[gate_rows["slice"] == quality.ALL, "labelled"] == 240).all()


def test_a_window_with_too_few_labels_has_counts_and_no_metric(model):
    frame, _ = binary_rows(model, 60)
    frame.loc[frame.index[:20], model.contract.target.name] = None
    frame["model_version"], frame["scored_at"] = "1", "2026-12-07T00:00:00Z"
    table = quality.quality_table(frame, model.contract, model.gate.measure, pd.Timedelta("1h"), min_labelled=50,
                                  resamples=10)
    row = table[table["slice"] == quality.ALL].iloc[0]
    assert (row["predictions"], row["labelled"]) == (60, 40) and math.isnan(row["value"])


# ---- the rule, at its bounds ----

def gate_table(values_by_version: dict[str, list[float]], gate: str = "roc_auc") -> pd.DataFrame:
    rows = []
    for version, values in values_by_version.items():
        for hour, value in enumerate(values):
            rows.append({"model_version": version, "window": pd.Timestamp("2026-12-07T00:00:00Z") + pd.Timedelta(hours=hour),
                         "slice": quality.ALL, "predictions": 100, "labelled": 100, "metric": gate, "value": value,
                         "low": value, "high": value})
    return pd.DataFrame(rows)


RULE = quality.QualityRule(floor=0.70, margin=0.25, windows=3, min_labelled=50, drift_windows=2)


@pytest.mark.parametrize(("values", "reference", "fires"), [
    ([0.80, 0.69, 0.69, 0.69], None, True),          # three windows in a row below the floor
    ([0.69, 0.69, 0.80, 0.69, 0.69], None, False),   # two in a row: not yet
    ([0.69, 0.69, 0.70], None, False),               # at the floor is not below it
    ([0.74, 0.74, 0.7499], 1.0, True),               # below its approval score by more than the margin (0.25)
    ([0.75, 0.75, 0.75], 1.0, False),                # by exactly the margin: not more
    ([0.69, math.nan, 0.69, 0.69], None, True),      # a window too few labels judge is skipped, not counted good
])
def test_the_quality_rule_fires_exactly_at_its_bounds(values, reference, fires):
    decision = quality.decide(gate_table({"3": values}), "roc_auc", RULE, {} if reference is None else {"3": reference})
    assert decision.retrain is fires
    if fires:
        assert "version 3" in decision.reasons[0]


def test_a_lower_is_better_gate_fires_above_its_ceiling():
    rule = quality.QualityRule(floor=0.2, greater_is_better=False, windows=2)
    assert quality.decide(gate_table({"1": [0.21, 0.25]}, "mape"), "mape", rule, {}).retrain
    assert not quality.decide(gate_table({"1": [0.2, 0.25]}, "mape"), "mape", rule, {}).retrain


def test_only_a_version_still_serving_can_start_retraining():
    table = gate_table({"1": [0.5, 0.5, 0.5, math.nan], "2": [math.nan, math.nan, math.nan, 0.9]})
    table = table[~((table["model_version"] == "1") & (table["window"] == table["window"].max()))]
    assert not quality.decide(table, "roc_auc", RULE, {}).retrain


@pytest.mark.parametrize(("statuses", "fires"), [
    (["drift", "drift"], True),
    (["no drift", "drift"], False),
    (["drift", "not enough data", "drift"], True),   # a window too small to test is skipped
    (["drift", "drift", "no drift"], False),
])
def test_drift_that_persists_fires_and_a_passing_drift_does_not(statuses, fires):
    decision = quality.decide(gate_table({"1": [0.9, 0.9, 0.9]}), "roc_auc", RULE, {}, {"1": statuses})
    assert decision.retrain is fires


def test_a_rule_with_no_window_or_a_negative_margin_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="windows"):
        quality.QualityRule(floor=0.5, windows=0)
    with pytest.raises(ValueError, match="margin"):
        quality.QualityRule(floor=0.5, margin=-0.1)


def test_a_slice_must_be_a_category_of_the_contract():
    with pytest.raises(contracts.ContractError, match="slices names size"):
        Contract(features=(Number("size"),), target=Target("y", "regression"), slices=("size",))
    round_trip = Contract.from_dict(MULTICLASS.to_dict(Gate("accuracy", 0.5)))
    assert round_trip.slices == MULTICLASS.slices


@pytest.mark.parametrize("seed", range(5))
def test_a_bootstrap_draws_metrics_are_scikit_learns(model, seed):
    """The draws' fast formulas give scikit-learn's values, ties and all."""
    frame, _ = binary_rows(model, 300, noise=0.2, seed=seed)
    frame["probability"] = frame["probability"].round(1 + seed % 3)  # ties among the scores
    scored = quality.scored_rows(frame, model.contract)
    slow, fast = quality.metrics(scored, model.gate.measure), quality.resample_metrics(scored, model.gate.measure)
    assert fast.keys() == slow.keys()
    for name, value in slow.items():
        assert fast[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name


def test_a_promotion_targets_references_are_its_copies_of_the_logged_versions(tmp_path):
    """Audit s11 F3: prod serves staging's image, so its log names staging's model and versions; the reference of each
    is the approval score on prod's copy of it (the version whose lineage tags name it; numbered on its own)."""
    from mlflow.tracking import MlflowClient

    tracking = f"sqlite:///{tmp_path / 'prod.db'}"
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)  # not an MLFLOW_REGISTRY_URI left in the env
    experiment = client.create_experiment("promotions", artifact_location=(tmp_path / "art").as_uri())
    client.create_registered_model("prod-model")
    for source_version, score in (("7", 0.74), ("9", 0.79)):  # prod's versions 1 and 2
        run = client.create_run(experiment).info.run_id
        client.log_metric(run, "gate_challenger_roc_auc", score)
        client.create_model_version("prod-model", (tmp_path / "art" / source_version).as_uri(), run_id=run,
                                    tags={"source_model": "staging-model", "source_version": source_version})
    refs = quality.references(tracking, "prod-model", ["7", "9", "8"], "roc_auc", logged_name="staging-model")
    assert refs == {"7": 0.74, "9": 0.79}  # 8 was never promoted: no reference
    # without the logged name the same numbers would be read as prod's own versions (there is no version 7 or 9)
    assert quality.references(tracking, "prod-model", ["7", "9"], "roc_auc") == {}
    assert quality.references(tracking, "no-such-model", ["7"], "roc_auc", logged_name="staging-model") == {}


def test_a_copy_not_ready_is_no_copy():
    """Unity Catalog creates a version with its tags before its files arrive: an interrupted promotion leaves one
    PENDING_REGISTRATION, which is no copy to read (the newest READY one is)."""
    from types import SimpleNamespace

    from monitoring import lineage

    lineage_tags = {"source_model": "staging-model", "source_version": "7"}
    versions = {"1": SimpleNamespace(version="1", status="READY", tags=lineage_tags),
                "2": SimpleNamespace(version="2", status="PENDING_REGISTRATION", tags=lineage_tags)}

    class UnityCatalog:  # its search results carry no tags; a get does
        def search_model_versions(self, query):
            return [SimpleNamespace(version=v.version, tags={}) for v in versions.values()]

        def get_model_version(self, name, version):
            return versions[version]

    assert lineage.copies_of(UnityCatalog(), "prod-model", "staging-model") == {"7": "1"}
    assert lineage.copies_of(UnityCatalog(), "prod-model", "staging-model", wanted="7") == {"7": "1"}


def test_references_read_the_versions_from_the_registry_and_their_runs_from_the_tracking_store(tmp_path):
    """On Databricks the gate's runs are the workspace's and the versions Unity Catalog's: two stores. A version whose
    run or number the stores do not hold has no reference, and the others still do."""
    from mlflow.tracking import MlflowClient

    tracking, registry = f"sqlite:///{tmp_path / 'runs.db'}", f"sqlite:///{tmp_path / 'models.db'}"
    runs = MlflowClient(tracking_uri=tracking)
    experiment = runs.create_experiment("gate", artifact_location=(tmp_path / "art").as_uri())
    approved = runs.create_run(experiment).info.run_id
    runs.log_metric(approved, "gate_challenger_roc_auc", 0.81)
    models = MlflowClient(tracking_uri=tracking, registry_uri=registry)
    models.create_registered_model("m")
    models.create_model_version("m", (tmp_path / "art" / "m").as_uri(), run_id=approved)  # version 1
    models.create_model_version("m", (tmp_path / "art" / "n").as_uri(), run_id="0" * 32)  # 2: its run is elsewhere

    assert quality.references(tracking, "m", ["1", "2", "3"], "roc_auc", registry_uri=registry) == {"1": 0.81}
    assert quality.references(tracking, "m", ["1"], "roc_auc") == {}  # the tracking store holds no versions
    assert quality.references(None, "m", ["1"], "roc_auc", registry_uri=registry) == {}
