"""A boosted binary classifier's compiled graph, rewritten (serving/graph_rewrite.py), answers what skl2onnx's own
graph answers: the same labels, the same probabilities to float32's precision, for each estimator the rewrite
applies to, with integer or text classes and missing values; any other classifier's graph is left as it is."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime
import pytest
from lightgbm import LGBMClassifier
from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from xgboost import XGBClassifier

from serving.compile import _float_type, register_converters
from serving.graph_rewrite import binary_trees_as_logit

WIDTH = 6


def skl2onnx_graph(estimator):
    """skl2onnx's graph of `estimator` as serving/compile.py asks for it (no zipmap), before any rewrite."""
    from skl2onnx import to_onnx

    register_converters()
    return to_onnx(estimator, initial_types=[("features", _float_type([None, WIDTH]))],
                   options={id(estimator): {"zipmap": False}}, target_opset={"": 18, "ai.onnx.ml": 3})


def run(graph, rows: np.ndarray) -> tuple[list, np.ndarray]:
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"features": rows})
    return label.tolist(), probabilities


def data(seed: int, missing: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(600, WIDTH)).astype(np.float32)
    target = rows[:, 0] + 0.5 * rows[:, 1] * rows[:, 2] + rng.normal(scale=0.7, size=len(rows)) > 0
    if missing:
        rows[rng.random(rows.shape) < 0.1] = np.nan
    return rows, target


ESTIMATORS = {
    "hist_gradient_boosting": (lambda: HistGradientBoostingClassifier(max_iter=40, random_state=0), True),
    "gradient_boosting": (lambda: GradientBoostingClassifier(n_estimators=40, random_state=0), False),
    "lightgbm": (lambda: LGBMClassifier(n_estimators=40, verbose=-1, random_state=0), True),
    "xgboost": (lambda: XGBClassifier(n_estimators=40, random_state=0), True),
}


CLASSES = {"0-1": (0, 1), "text": ("approved", "declined"), "3-7": (3, 7)}
CASES = [(kind, classes) for kind in ESTIMATORS for classes in CLASSES
         if kind != "xgboost" or classes == "0-1"]  # XGBClassifier takes classes 0..k-1 only


@pytest.mark.parametrize(("kind", "classes"), CASES, ids=[f"{kind}-{classes}" for kind, classes in CASES])
def test_a_boosted_binary_classifier_answers_the_same_rewritten(kind, classes):
    make, takes_missing = ESTIMATORS[kind]
    classes = CLASSES[classes]
    rows, target = data(seed=len(kind), missing=takes_missing)
    estimator = make().fit(rows, np.where(target, classes[1], classes[0]))
    original = skl2onnx_graph(estimator)
    rewritten = copy.deepcopy(original)
    assert binary_trees_as_logit(rewritten)
    assert "TreeEnsembleClassifier" not in [node.op_type for node in rewritten.graph.node]
    probes = np.vstack([rows, np.zeros((1, WIDTH), dtype=np.float32), np.full((1, WIDTH), np.nan, dtype=np.float32)])
    expected_labels, expected = run(original, probes)
    labels, probabilities = run(rewritten, probes)
    assert labels == expected_labels and set(labels) == set(classes)  # both classes answered
    assert probabilities.dtype == np.float32 and probabilities.shape == expected.shape
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=3e-7)
    assert labels == [classes[1] if p1 > 0.5 else classes[0] for p1 in probabilities[:, 1].tolist()]
    # the estimator's own labels and probabilities, as packaging's equivalence check compares them
    assert labels == estimator.predict(probes[:-1]).tolist() + labels[-1:]
    np.testing.assert_allclose(probabilities[:-1], estimator.predict_proba(probes[:-1]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: RandomForestClassifier(n_estimators=5, random_state=0),
                                  lambda: HistGradientBoostingClassifier(max_iter=10)], ids=["forest", "multiclass"])
def test_any_other_classifier_graph_is_left_as_it_is(make):
    rows, target = data(seed=1, missing=False)
    labels = target.astype(int) + (rows[:, 3] > 1)  # three classes for the multiclass model; the forest's too
    original = skl2onnx_graph(make().fit(rows, labels))
    graph = copy.deepcopy(original)
    assert not binary_trees_as_logit(graph)
    assert graph == original


def test_packaging_compiles_a_boosted_binary_classifier_rewritten_with_each_opset_once():
    """serving/compile.py's own path: the rewrite applied, and the opset list canonical (each domain once, sorted)."""
    import onnx

    from serving.compile import compile_pipeline
    from serving.scoring.model import InputField

    rows, target = data(seed=2, missing=True)
    estimator = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(rows, target)
    inputs = tuple(InputField(name=f"x{index}", type="double") for index in range(WIDTH))
    model = onnx.load_from_string(compile_pipeline(estimator, inputs).onnx_bytes)
    assert model.graph.node[0].op_type == "TreeEnsembleRegressor"
    imports = [(o.domain, o.version) for o in model.opset_import]
    assert imports == sorted(set(imports)) and len({domain for domain, _ in imports}) == len(imports)


def test_a_few_records_are_scored_by_skl2onnxs_graph_and_many_by_the_rewritten_one(tmp_path):
    """onnxruntime's two-class kernel scores a few records faster, the rewritten graph many: packaging keeps skl2onnx's
    graph beside the rewritten one (and nothing beside any other classifier's), and the scorer takes it for requests of
    at most FEW_RECORDS records. Both answer the estimator's probabilities and labels, on either side of the cut."""
    import onnx

    from serving.compile import compile_pipeline
    from serving.scoring.model import FEW_RECORDS, FEW_RECORDS_ONNX_FILE, ONNX_FILE, Manifest, OnnxScorer, load_scorer

    rows, target = data(seed=4, missing=True)
    estimator = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(rows, target)
    names = [f"x{index}" for index in range(WIDTH)]
    manifest = Manifest.from_dict({"model": {"name": "m", "version": "1"}, "task": "binary", "classes": [0, 1],
                                   "runtime": "onnx", "predict_fn": "predict_proba", "input_example": [],
                                   "inputs": [{"name": name, "type": "double"} for name in names]})
    compiled = compile_pipeline(estimator, manifest.inputs)
    assert compiled.few_records_bytes is not None
    assert onnx.load_from_string(compiled.few_records_bytes).graph.node[0].op_type == "TreeEnsembleClassifier"
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(rows, target)
    assert compile_pipeline(forest, manifest.inputs).few_records_bytes is None  # nothing rewritten: one graph
    (tmp_path / ONNX_FILE).write_bytes(compiled.onnx_bytes)
    (tmp_path / FEW_RECORDS_ONNX_FILE).write_bytes(compiled.few_records_bytes)
    scorer = load_scorer(tmp_path, manifest)
    assert isinstance(scorer, OnnxScorer)
    for count in (1, FEW_RECORDS, FEW_RECORDS + 1, 60):
        columns = {name: [float(v) if not np.isnan(v) else None for v in rows[:count, index]]
                   for index, name in enumerate(names)}
        feeds = scorer.feeds(columns)
        assert (scorer.graph_for(feeds) is scorer._few_run) == (count <= FEW_RECORDS)
        expected = estimator.predict_proba(rows[:count])
        assert np.abs(scorer.predict(columns) - expected).max() < 3e-6
        assert scorer.labels(columns) == estimator.predict(rows[:count]).tolist()


def test_packaging_drops_a_few_records_graph_that_fails_its_check_and_the_warm_up_runs_both(tmp_path, monkeypatch):
    """Each graph is proved: a few-records graph that differs from the model is left out (the rewritten one serves
    every request, as before it existed), and the warm-up at start-up runs both graphs, so a broken one makes the
    service not ready instead of failing the first request of more than FEW_RECORDS records."""
    import dataclasses

    import onnx
    import pandas as pd

    from serving import compile as compiler
    from serving import runtime
    from serving.compile import compile_pipeline
    from serving.scoring.app import create_app, load_model
    from serving.scoring.model import FEW_RECORDS_ONNX_FILE, ONNX_FILE, FrameScorer, Manifest

    rows, target = data(seed=5, missing=False)
    estimator = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(rows, target)
    other = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(rows, 1 - target)  # the opposite model
    names = [f"x{index}" for index in range(WIDTH)]
    example = [dict(zip(names, map(float, row), strict=True)) for row in rows[:3]]
    raw = {"model": {"name": "m", "version": "1"}, "task": "binary", "classes": [0, 1], "predict_fn": "predict_proba",
           "input_example": example, "inputs": [{"name": name, "type": "double"} for name in names]}
    manifest = Manifest.from_dict({**raw, "runtime": "sklearn"})
    wrong = compile_pipeline(other, manifest.inputs).few_records_bytes
    real = compiler.compile_pipeline
    monkeypatch.setattr(compiler, "compile_pipeline",
                        lambda *args, **kwargs: dataclasses.replace(real(*args, **kwargs), few_records_bytes=wrong))
    records = pd.DataFrame(rows[:200], columns=names)
    (tmp_path / "mlflow").mkdir()
    (tmp_path / "mlflow" / "MLmodel").write_text("flavors: {}\n")
    found = runtime._onnx(estimator, raw, FrameScorer(estimator, manifest), records, tmp_path, lambda text: None)
    assert found["runtime"] == "onnx" and (tmp_path / ONNX_FILE).exists()
    assert not (tmp_path / FEW_RECORDS_ONNX_FILE).exists()

    served = Manifest.from_dict({**raw, "runtime": "onnx"})
    (tmp_path / "manifest.json").write_text(__import__("json").dumps({**raw, "runtime": "onnx"}))
    (tmp_path / FEW_RECORDS_ONNX_FILE).write_bytes(real(estimator, served.inputs).few_records_bytes)
    broken = onnx.load_from_string(real(estimator, served.inputs).onnx_bytes)  # raw scores, not probabilities:
    for node in broken.graph.node:  # what only a request past FEW_RECORDS would have found
        if node.op_type == "Sigmoid":
            node.op_type = "Identity"
    (tmp_path / ONNX_FILE).write_bytes(broken.SerializeToString())
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    path = create_app().app.state.model
    load_model(path, tmp_path)
    assert path.scorer is None and "warm-up failed" in (path.problem or "")
