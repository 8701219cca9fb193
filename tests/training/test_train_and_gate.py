"""The training entry point against a real sqlite MLflow registry, for each example model: what a run records, what
a version carries, and the gate deciding both ways by the model module's own metric and direction. Columns, the
metric and the task come from the model module, so a new module is checked by the same tests."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import mean_absolute_error

from testing.unity_catalog import searching_like_uc
from training import contract, data, gate, search
from training import train as training
from training.baseline import PREDICTION_OUTPUT
from training.contract import ContractError, Gate, Metric
from training.gate import decide
from training.loader import validate_frame
from training.search import features_of


@pytest.fixture(scope="module")
def regression_registry(tmp_path_factory) -> dict:
    """The regression example (models/house_prices.py) trained into a registry of its own."""
    model = contract.load("house-prices")
    root = tmp_path_factory.mktemp("house-prices")
    table = root / "table.parquet"
    data.write_table(data.example_table(model, 3000, seed=11), table)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    summary = training.main(["--model-module", model.module, "--data", str(table), "--tracking-uri", uri,
                             "--registry-uri", uri, "--model-name", "houses", "--artifact-root", (root / "a").as_uri(),
                             "--environment", "test"])
    return {"root": root, "tracking_uri": uri, "data": table, "model_name": "houses", "version": summary["version"],
            "summary": summary, "model": model}


@pytest.fixture(params=["credit-default", "house-prices"])
def trained(request) -> dict:
    """Each example's registry as the current MLflow store: the session's (credit-default) or the regressor's."""
    found = request.getfixturevalue("registry" if request.param == "credit-default" else "regression_registry")
    mlflow.set_tracking_uri(found["tracking_uri"])
    mlflow.set_registry_uri(found["tracking_uri"])
    return found


def version_files(trained: dict) -> Path:
    return Path(mlflow.artifacts.download_artifacts(f"models:/{trained['model_name']}/{trained['version']}"))


def test_held_out_metric_reaches_the_gate_and_shows_real_signal(trained):
    model, metrics = trained["model"], trained["summary"]["metrics"]
    assert trained["summary"]["metric"] == model.gate.name
    assert model.gate.reaches_floor(metrics[model.gate.name])
    assert trained["summary"]["gate"]["promoted"] is True
    if model.contract.task == "binary":
        assert 0 < metrics["log_loss"] < 0.69  # better than a coin
        assert 0 < metrics["f1"] <= 1 and 0.05 <= metrics["threshold"] <= 0.95
    if model.contract.task == "regression":
        assert metrics["r2"] > 0.5 and abs(metrics["bias"]) < 0.25 * metrics["mae"]


def test_run_records_params_metrics_and_lineage_tags(trained):
    model = trained["model"]
    run = MlflowClient().get_run(trained["summary"]["run_id"])
    expected = {"binary": ("roc_auc", "pr_auc", "log_loss", "f1"), "multiclass": ("accuracy", "f1_macro", "log_loss"),
                "regression": ("rmse", "mae", "r2", "bias")}[model.contract.task]
    assert {f"test_{k}" for k in (*expected, model.gate.name)} <= set(run.data.metrics)
    assert f"valid_{model.gate.name}" in run.data.metrics
    assert {*model.search, "seed", "model_module", "model_family"} <= set(run.data.params)
    assert ("decision_threshold" in run.data.params) == (model.contract.task == "binary")
    tags = run.data.tags
    assert tags["environment"] == "test" and tags["model_module"] == model.module
    assert len(tags["data_fingerprint"]) == 16 and tags["git_sha"]
    expected_fingerprint = training.data_fingerprint(validate_frame(pd.read_parquet(trained["data"]), model.contract))
    assert tags["data_fingerprint"] == expected_fingerprint


def test_registered_version_has_signature_example_and_explicit_requirements(trained):
    contract_ = trained["model"].contract
    uri = f"models:/{trained['model_name']}/{trained['version']}"
    info = mlflow.models.get_model_info(uri)
    columns = {spec.name: spec.type.name for spec in info.signature.inputs.inputs}
    assert columns == {f.name: "string" if f.kind == "category" else "double" for f in contract_.features}
    flavor = info.flavors["python_function"]
    assert flavor["predict_fn"] == ("predict" if contract_.task == "regression" else "predict_proba")
    root = version_files(trained)
    requirements = (root / "requirements.txt").read_text().splitlines()
    names = {line.split("==")[0] for line in requirements if line and not line.startswith("#")}
    assert {"scikit-learn", "numpy", "pandas", "skops"} <= names
    assert not names & {"pytest", "ruff", "httpx", "pulumi", "fastapi"}
    assert all("==" in line for line in requirements if line and not line.startswith("#"))
    example = json.loads((root / "input_example.json").read_text())
    assert example["columns"] == contract_.feature_names


def test_the_version_carries_its_contract_for_serving_and_the_jobs(trained):
    model = trained["model"]
    carried = json.loads((version_files(trained) / "extra_files" / contract.CONTRACT_FILE).read_text())
    assert contract.Contract.from_dict(carried) == model.contract
    assert carried["ids"] == list(model.contract.ids) and carried["personal"] == list(model.contract.personal)
    assert carried["gate"]["metric"]["name"] == model.gate.name and carried["gate"]["floor"] == model.gate.floor


def test_a_version_carries_no_row_of_a_real_person(trained):
    """Only aggregates and records drawn from them: the table's rows stay behind its grants, and promotion copies
    nothing personal into prod's registry."""
    contract_ = trained["model"].contract
    root = version_files(trained)
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert {p for p in files if p.endswith((".parquet", ".csv"))} == {"extra_files/equivalence_records.parquet"}
    table = features_of(validate_frame(pd.read_parquet(trained["data"]), contract_), contract_)
    people = set(map(tuple, table.astype(str).to_numpy()))
    example = json.loads((root / "input_example.json").read_text())
    drawn = [pd.DataFrame(example["data"], columns=example["columns"]),
             pd.read_parquet(root / "extra_files/equivalence_records.parquet")]
    for frame in drawn:
        rows = set(map(tuple, frame[contract_.feature_names].astype(str).to_numpy()))
        assert not rows & people
    assert len(drawn[1]) > 1000  # random draws plus the edge, category and missing-value probes


def test_the_run_names_its_training_data_as_an_mlflow_dataset(trained):
    """Lineage through mlflow.log_input: the file (or table) and MLflow's digest of the rows, on the run's inputs."""
    contract_ = trained["model"].contract
    run = MlflowClient().get_run(trained["summary"]["run_id"])
    [used] = [d for d in run.inputs.dataset_inputs if {(t.key, t.value) for t in d.tags} >= {("mlflow.data.context", "training")}]
    assert json.loads(used.dataset.source) == {"uri": str(trained["data"])}
    frame = validate_frame(pd.read_parquet(trained["data"]), contract_)
    assert used.dataset.digest == training.training_dataset(frame, str(trained["data"]), contract_).digest
    table = training.training_dataset(frame, "staging.sales.rows", contract_)  # a Unity Catalog table, by name
    assert json.loads(table.source.to_json())["delta_table_name"] == "staging.sales.rows"
    assert table.digest == used.dataset.digest, "the same rows, the same digest, wherever they were read from"


def test_the_fingerprint_tells_apart_tables_that_mlflows_digest_calls_the_same(model):
    """Why the fingerprint tag stays beside mlflow.log_input: a change past row 10,000, or in a text column with a
    missing value somewhere, leaves MLflow's digest as it was."""
    c = model.contract
    frame = validate_frame(data.example_table(model, 12_000, seed=1), c)
    number = c.numbers[0].name
    later_row = frame.copy()
    later_row.loc[11_000, number] = later_row[number].dropna().iloc[0] + 1
    text = next(f.name for f in c.categories if frame[f.name].isna().any())
    changed_text = frame.copy()
    present = frame[text].dropna()
    changed_text.loc[present.index[0], text] = next(v for v in present.unique() if v != present.iloc[0])
    for changed in (later_row, changed_text):
        assert training.training_dataset(changed, "t.csv", c).digest == training.training_dataset(frame, "t.csv", c).digest
        assert training.data_fingerprint(changed) != training.data_fingerprint(frame)


def test_the_gate_reads_its_held_out_rows_from_the_table_not_from_the_version(trained):
    """The held-out split is a function of each row, so the gate re-derives exactly training's test rows."""
    model, client = trained["model"], MlflowClient()
    assert gate.data_of(client, trained["model_name"], trained["version"]) == str(trained["data"])
    holdout = gate.load_holdout(str(trained["data"]), model)
    score = gate.holdout_score(f"models:/{trained['model_name']}/{trained['version']}", holdout, model)
    assert score == pytest.approx(trained["summary"]["metrics"][model.gate.name])  # training scored these very rows


def test_drift_baseline_is_an_artifact_of_the_version(trained):
    contract_ = trained["model"].contract
    baseline = json.loads((version_files(trained) / "extra_files" / training.BASELINE_FILE).read_text())
    assert list(baseline["features"]) == contract_.feature_names
    number = baseline["features"][contract_.numbers[0].name]
    assert number["type"] == "numeric" and len(number["fractions"]) == len(number["edges"]) + 1
    assert sum(number["fractions"]) == pytest.approx(1.0)
    category = contract_.categories[0]
    frequencies = baseline["features"][category.name]["frequencies"]
    assert set(frequencies) <= set(category.values or frequencies) and sum(frequencies.values()) == pytest.approx(1.0)
    prediction = baseline["prediction"]
    assert prediction["output"] == PREDICTION_OUTPUT[contract_.task]
    assert prediction["type"] == ("categorical" if contract_.task == "multiclass" else "numeric")


def test_version_tags_carry_threshold_and_metrics(trained):
    model, summary = trained["model"], trained["summary"]
    tags = MlflowClient().get_model_version(trained["model_name"], trained["version"]).tags
    assert float(tags[model.gate.name]) == pytest.approx(summary["metrics"][model.gate.name])
    if model.contract.task == "binary":
        assert float(tags["decision_threshold"]) == pytest.approx(summary["metrics"]["threshold"])
    else:
        assert "decision_threshold" not in tags


HIGHER = Gate("roc_auc", floor=0.7, tolerance=0.01)
LOWER = Gate(Metric("mae", mean_absolute_error, greater_is_better=False, bounds=(0, math.inf)), floor=10, tolerance=1)


@pytest.mark.parametrize(("judge", "challenger", "champion", "promoted", "words"), [
    (HIGHER, 0.65, None, False, "below the floor"),
    (HIGHER, 0.80, None, True, "first model"),
    (HIGHER, 0.80, 0.805, True, "within tolerance"),
    (HIGHER, 0.80, 0.85, False, "worse than the champion"),
    (HIGHER, 0.90, 0.85, True, "within tolerance"),
    (LOWER, 12.0, None, False, "above the ceiling"),
    (LOWER, 8.0, None, True, "first model"),
    (LOWER, 8.0, 7.5, True, "within tolerance"),
    (LOWER, 8.0, 6.0, False, "worse than the champion"),
    (LOWER, 5.0, 6.0, True, "within tolerance"),
])
def test_decide_follows_the_metrics_direction(judge, challenger, champion, promoted, words):
    decided, reason = decide(challenger, champion, judge)
    assert decided is promoted and words in reason


def test_a_gate_refuses_a_floor_outside_its_metrics_range():
    with pytest.raises(ContractError, match=r"outside roc_auc's range 0\.\.1"):
        Gate("roc_auc", floor=1.5)
    with pytest.raises(ContractError, match=r"outside neg_mean_absolute_error's range -inf\.\.0"):
        Gate("neg_mean_absolute_error", floor=3)
    with pytest.raises(ContractError, match="tolerance"):
        Gate("average_precision", floor=0.3, tolerance=-0.1)
    with pytest.raises(ContractError, match="not a scikit-learn scorer name"):
        Gate("pr_auc", floor=0.3)
    assert Gate("average_precision", floor=0.3).floor == 0.3  # a PR-AUC gate at 0.3: a rare-event model's floor
    assert Gate("r2", floor=-0.5).measure.bounds == (-math.inf, 1.0)


@pytest.fixture(scope="module")
def gated_registry(model, tmp_path_factory) -> dict:
    """A registry of its own (these tests move aliases), trained with the session's model module."""
    root = tmp_path_factory.mktemp("gated")
    good = root / "good.parquet"
    data.write_table(data.example_table(model, 3000, seed=5), good)
    noise = data.example_table(model, 3000, seed=6)
    target = model.contract.target.name
    noise[target] = noise[target].sample(frac=1.0, random_state=1).to_numpy()  # no signal left
    noisy = root / "noise.parquet"
    data.write_table(noise, noisy)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return {"uri": uri, "good": good, "noise": noisy, "artifacts": (root / "artifacts").as_uri(), "model": model}


def _train(reg: dict, data_path: Path, *extra: str) -> dict:
    mlflow.set_tracking_uri(reg["uri"])
    return training.main(["--model-module", reg["model"].module, "--data", str(data_path), "--tracking-uri", reg["uri"],
                          "--model-name", "gated", "--artifact-root", reg["artifacts"], *extra])


def _unreachable_and_lenient(judge: Gate) -> tuple[str, str]:
    low, high = judge.measure.bounds
    return (str(high), str(low)) if judge.measure.greater_is_better else (str(low), str(high))


def test_gate_both_ways_on_a_real_registry(gated_registry, capsys):
    client, judge = MlflowClient(tracking_uri=gated_registry["uri"]), gated_registry["model"].gate
    unreachable, lenient = _unreachable_and_lenient(judge)
    below_floor = _train(gated_registry, gated_registry["good"], "--gate-floor", unreachable)
    assert below_floor["gate"]["promoted"] is False
    assert gate.current_champion(client, "gated") is None  # a rejected model never becomes champion

    first = _train(gated_registry, gated_registry["good"])
    assert first["gate"]["promoted"] is True and first["gate"]["champion_version"] is None
    assert gate.current_champion(client, "gated") == first["version"]

    worse = _train(gated_registry, gated_registry["noise"], "--gate-floor", lenient)
    decision = worse["gate"]
    assert decision["promoted"] is False and decision["champion_version"] == first["version"]
    assert not judge.within_tolerance(decision["challenger_score"], decision["champion_score"])
    assert gate.current_champion(client, "gated") == first["version"]
    assert str(client.get_model_version_by_alias("gated", "challenger").version) == worse["version"]

    run = client.get_run(worse["run_id"])
    assert run.data.tags["gate.decision"] == "rejected" and run.data.tags["gate.metric"] == judge.name
    assert run.data.metrics[f"gate_champion_{judge.name}"] == pytest.approx(decision["champion_score"])
    assert run.data.metrics[f"gate_challenger_{judge.name}"] == pytest.approx(decision["challenger_score"])
    assert client.get_model_version("gated", worse["version"]).tags["gate.decision"] == "rejected"
    assert "REJECTED" in capsys.readouterr().out


def test_a_floor_override_outside_the_metrics_range_is_refused_before_training(gated_registry):
    with pytest.raises(SystemExit, match="outside"):
        _train(gated_registry, gated_registry["good"], "--gate-floor", "7")


def test_gate_cli_regates_a_version_from_its_own_holdout(gated_registry, capsys):
    client = MlflowClient(tracking_uri=gated_registry["uri"])
    newest = max(int(v.version) for v in client.search_model_versions("name='gated'"))
    champion_before = gate.current_champion(client, "gated")
    _, lenient = _unreachable_and_lenient(gated_registry["model"].gate)
    assert gate.main(["--tracking-uri", gated_registry["uri"], "--model-module", gated_registry["model"].module,
                      "--model-name", "gated", "--version", str(newest), "--gate-floor", lenient]) == 0
    out = capsys.readouterr().out
    assert f"gate: v{newest}" in out
    assert gate.current_champion(client, "gated") == champion_before


def _job_run_version(client: MlflowClient, experiment_id: str, job_run: str, source_version: str,
                     model: str = "handover") -> str:
    """What a train task of job run `job_run` leaves: a tagged MLflow run and a version registered from it."""
    run = client.create_run(experiment_id, tags={gate.JOB_RUN_TAG: job_run})
    client.set_terminated(run.info.run_id)
    source = client.get_model_version("gated", source_version)
    return str(client.create_model_version(model, source.source, run_id=run.info.run_id).version)


def test_gate_judges_the_version_of_its_own_job_run(gated_registry, capsys):
    """Two job runs registered versions before either gate ran (a manual run during a scheduled one): each gate
    finds its own run's version by the job run id, not the newest version and not a task value."""
    client = MlflowClient(tracking_uri=gated_registry["uri"])
    good = gate.current_champion(client, "gated")
    noisy = str(client.get_model_version_by_alias("gated", "challenger").version)
    experiment = client.create_experiment("handover", artifact_location=gated_registry["artifacts"])
    client.create_registered_model("handover")
    first = _job_run_version(client, experiment, "111", good)
    second = _job_run_version(client, experiment, "222", noisy)
    _, lenient = _unreachable_and_lenient(gated_registry["model"].gate)
    args = ["--tracking-uri", gated_registry["uri"], "--model-module", gated_registry["model"].module, "--model-name",
            "handover", "--experiment", "handover", "--gate-floor", lenient, "--data", str(gated_registry["good"])]

    assert gate.main([*args, "--job-run-id", "111"]) == 0  # the older version, although "222" registered the newest
    assert f"gate: v{first} PROMOTED" in capsys.readouterr().out
    assert gate.current_champion(client, "handover") == first
    assert "gate.decision" not in client.get_model_version("handover", second).tags  # not judged by run 111's gate

    assert gate.main([*args, "--job-run-id", "222"]) == 0
    assert f"gate: v{second} REJECTED" in capsys.readouterr().out
    assert gate.current_champion(client, "handover") == first

    with pytest.raises(gate.VersionNotFound, match="job run 333 registered no version"):
        gate.main([*args, "--job-run-id", "333"])
    with pytest.raises(SystemExit):  # a reference Databricks did not resolve is refused, not looked up
        gate.main([*args, "--job-run-id", "{{tasks.train.values.model_version}}"])
    assert "unresolved dynamic value reference" in capsys.readouterr().err


def test_a_repaired_train_task_is_judged_by_its_newest_version(gated_registry, capsys, monkeypatch):
    """A repair keeps {{job.run_id}}: the repaired train task registers a second version with the same tag, and the
    gate judges the newest one (the repaired run's), with a client that searches as Unity Catalog's does."""
    client = MlflowClient(tracking_uri=gated_registry["uri"])
    good = gate.current_champion(client, "gated")
    experiment = client.create_experiment("repaired", artifact_location=gated_registry["artifacts"])
    client.create_registered_model("repaired")
    first_attempt = _job_run_version(client, experiment, "444", good, model="repaired")
    repaired = _job_run_version(client, experiment, "444", good, model="repaired")
    local = gate.MlflowClient
    monkeypatch.setattr(gate, "MlflowClient", lambda *a, **k: searching_like_uc(local(*a, **k)))
    _, lenient = _unreachable_and_lenient(gated_registry["model"].gate)
    assert gate.main(["--tracking-uri", gated_registry["uri"], "--model-module", gated_registry["model"].module,
                      "--model-name", "repaired", "--experiment", "repaired", "--gate-floor", lenient,
                      "--data", str(gated_registry["good"]), "--job-run-id", "444"]) == 0
    assert f"gate: v{repaired} PROMOTED" in capsys.readouterr().out
    assert "gate.decision" not in client.get_model_version("repaired", first_attempt).tags


def test_the_regressor_is_gated_by_its_own_lower_is_better_metric(regression_registry, tmp_path):
    """house-prices' GATE is a function of its own (MAPE, lower is better). A version trained on rows whose prices
    were shuffled (the held-out rows kept theirs) is worse than the champion on the same held-out rows: refused; and
    a ceiling nobody reaches refuses even a good one."""
    model = regression_registry["model"]
    assert not model.gate.measure.greater_is_better and model.gate.measure.function is not None
    table = data.example_table(model, 3000, seed=11)
    c = model.contract
    held_out = search.split(table.assign(row=range(len(table))), c).test["row"]
    learned = ~table.index.isin(held_out)
    table.loc[learned, c.target.name] = table.loc[learned, c.target.name].sample(frac=1.0, random_state=1).to_numpy()
    path = tmp_path / "noise.parquet"
    data.write_table(table, path)
    uri = regression_registry["tracking_uri"]
    mlflow.set_tracking_uri(uri)
    args = ["--model-module", model.module, "--tracking-uri", uri, "--registry-uri", uri, "--model-name", "houses",
            "--artifact-root", (regression_registry["root"] / "a").as_uri()]
    worse = training.main([*args, "--data", str(path), "--gate-floor", "inf"])
    assert worse["gate"]["promoted"] is False and "worse than the champion" in worse["gate"]["reason"]
    assert worse["gate"]["challenger_score"] > worse["gate"]["champion_score"] + model.gate.tolerance
    strict = training.main([*args, "--data", str(regression_registry["data"]), "--gate-floor", "0"])
    assert strict["gate"]["promoted"] is False and "above the ceiling 0.0000" in strict["gate"]["reason"]


def test_a_model_module_that_misses_a_declaration_is_named(tmp_path, monkeypatch):
    package = tmp_path / "models_elsewhere"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "half.py").write_text("from models.credit_default import CONTRACT, build\nSEARCH = {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ContractError, match=r"models_elsewhere\.half: GATE must be a Gate"):
        contract.load("models_elsewhere.half")
    with pytest.raises(ContractError, match=r"no model module models\.fraud \(models/fraud\.py\)"):
        contract.load("fraud")
    broken = dataclasses.replace(contract.load("credit-default"), search={})
    assert broken.grid() == [{}]  # an empty search fits build({}, seed) once


def test_the_version_requires_what_the_model_modules_code_imports(tmp_path, monkeypatch):
    """A module that imports lightgbm (in a function, too) gets it pinned in the version's requirements, beside
    scikit-learn and its kin: the image that loads a class of the team's own installs what that class needs."""
    import lightgbm

    import models
    from training import code

    (tmp_path / "boosted.py").write_text("from models.house_prices import CONTRACT, GATE\n"
                                         "def build(params, seed):\n    import lightgbm\n    return lightgbm.LGBMRegressor()\n")
    monkeypatch.setattr(models, "__path__", [*models.__path__, str(tmp_path)])
    found = code.distributions("models.boosted")
    assert found["lightgbm"] == lightgbm.__version__ and "scikit-learn" in found  # house_prices' own, imported by it
    assert not {"models", "training", "sys", "os"} & set(found)
    assert f"lightgbm=={lightgbm.__version__}" in training.pip_requirements("models.boosted")
    assert not [r for r in training.pip_requirements("models.credit_default") if r.startswith("lightgbm")]
