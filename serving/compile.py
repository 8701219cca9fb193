"""Compile a registered scikit-learn model to ONNX and prove it scores the same.

The pandas conversion dominates the pipeline's per-record cost; the compiled graph skips it.
Compilation happens once, at packaging time, by skl2onnx, with onnxmltools' converters for XGBoost's and
LightGBM's scikit-learn estimators registered beside its own (when those libraries are installed). A classifier
compiles to `label` and `probabilities` (no zipmap), a regressor to one value per record.

Equivalence is checked with the serving code itself (scoring.model's scorers, the registered estimator in-process
as the reference) on the version's equivalence records (training drew them from the drift baseline: random draws,
every quantile edge and the float below it, each category, unseen and missing values; no row of a real person) or
on probes built from the input example (serving/runtime.py). A classifier must give the same labels and
probabilities within EQUIVALENCE_TOLERANCE, a regressor values within it relative to the value (or, for values near
zero, to a thousandth of the largest). A model that fails is served by the next runtime (serving/runtime.py).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from serving.graph_rewrite import binary_trees_as_logit
from serving.scoring.model import (
    ENCODING_KEY,
    FEATURES_INPUT,
    Columns,
    FrameScorer,
    InputField,
    Manifest,
    OnnxScorer,
    Scorer,
)

EQUIVALENCE_TOLERANCE = 1e-5
ONNX_OPSETS = {"": 18, "ai.onnx.ml": 3}


class CompileError(RuntimeError):
    """The model has a step with no ONNX converter: the next runtime serves it."""


class EquivalenceError(RuntimeError):
    """A runtime's model disagrees with the registered one: the next runtime serves it."""


@dataclass(frozen=True)
class Compiled:
    onnx_bytes: bytes
    missing_category: str | None
    # skl2onnx's own graph where onnx_bytes is a boosted binary classifier's rewritten one (serving/graph_rewrite.py):
    # onnxruntime's two-class kernel scores a few records faster, the rewritten one many (OnnxScorer picks by rows).
    few_records_bytes: bytes | None = None


def compile_pipeline(pipeline: Any, inputs: tuple[InputField, ...], classifier: bool = True) -> Compiled:
    """The estimator alone on one encoded float matrix when the preprocessing is imputers and one-hot
    encoders, or when every input is a number and the model takes them as one matrix (the Encoding travels in the
    model's metadata); otherwise the whole pipeline, one input per column."""
    register_converters()
    graph_pipeline, missing_category = _fold_string_imputers(pipeline)
    encoded = encoding_of(pipeline, inputs) or _numbers_matrix(pipeline, inputs)
    if encoded is not None:
        blocks, estimator = encoded
        graphs = _to_onnx(estimator, [(FEATURES_INPUT, _float_type([None, estimator.n_features_in_]))], pipeline,
                          classifier)
        for graph in filter(None, graphs):
            graph.metadata_props.add(key=ENCODING_KEY, value=json.dumps({"blocks": blocks}, sort_keys=True,
                                                                        separators=(",", ":")))
        return _compiled(graphs, missing_category)
    from skl2onnx.common.data_types import StringTensorType

    initial_types = [(f.name, StringTensorType([None, 1]) if f.is_string else _float_type([None, 1])) for f in inputs]
    return _compiled(_to_onnx(graph_pipeline, initial_types, pipeline, classifier), missing_category)


def _compiled(graphs: tuple[Any, Any], missing_category: str | None) -> Compiled:
    graph, few_records = graphs
    return Compiled(canonical_bytes(graph), missing_category,
                    None if few_records is None else canonical_bytes(few_records))


def _numbers_matrix(model: Any, inputs: tuple[InputField, ...]) -> tuple[list[dict], Any] | None:
    """A model that reads every input as one matrix of numbers (an estimator, or a Pipeline that does not start
    with a ColumnTransformer): the Encoding of its numbers, a missing one passed on as NaN, and the model itself."""
    first = model.steps[0][1] if isinstance(model, Pipeline) else model
    if isinstance(first, ColumnTransformer) or any(f.is_string for f in inputs) \
            or getattr(model, "n_features_in_", None) != len(inputs):
        return None
    names = getattr(model, "feature_names_in_", None)
    if names is not None and list(names) != [f.name for f in inputs]:
        return None
    return [{"column": f.name, "fill": float("nan")} for f in inputs], model


_registered: list[str] = []


def register_converters() -> list[str]:
    """onnxmltools' converters for XGBoost's and LightGBM's scikit-learn estimators, registered with skl2onnx (once,
    for those of the two that are installed): the names of the estimators registered."""
    if _registered:
        return _registered
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    classifier_options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    try:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

        update_registered_converter(LGBMClassifier, "LightGbmLGBMClassifier", calculate_linear_classifier_output_shapes,
                                    convert_lightgbm, options=classifier_options)
        update_registered_converter(LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes,
                                    convert_lightgbm, options={"split": None})
        _registered.extend(["LGBMClassifier", "LGBMRegressor"])
    except ImportError:
        pass
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from xgboost import XGBClassifier, XGBRegressor

        update_registered_converter(XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes,
                                    convert_xgboost, options=classifier_options)
        update_registered_converter(XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes,
                                    convert_xgboost)
        _registered.extend(["XGBClassifier", "XGBRegressor"])
    except ImportError:
        pass
    _registered.append("")  # registered: do not try again
    return _registered


def _float_type(shape: list):
    from skl2onnx.common.data_types import FloatTensorType

    return FloatTensorType(shape)


def _to_onnx(model, initial_types: list, pipeline: Any, classifier: bool = True) -> tuple[Any, Any]:
    """(skl2onnx's graph, or a boosted binary classifier's rewritten to the form onnxruntime scores many records faster
    (serving/graph_rewrite.py); skl2onnx's own graph when it was rewritten, else None)."""
    from onnx import ModelProto
    from skl2onnx import to_onnx

    model = _booster_without_feature_names(model)
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    try:
        graph = to_onnx(model, initial_types=initial_types, options={id(final): {"zipmap": False}} if classifier else None,
                        target_opset=ONNX_OPSETS)
    except Exception as error:  # skl2onnx raises many types for "no converter"
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CompileError(f"{type(pipeline).__name__}: {reason[:300]}") from error
    if not classifier:
        return graph, None
    original = ModelProto()
    original.CopyFrom(graph)
    return (graph, original) if binary_trees_as_logit(graph) else (graph, None)


def _booster_without_feature_names(model: Any) -> Any:
    """onnxmltools reads an XGBoost booster's splits by feature index (f0, f1, ...): a copy whose booster forgot the
    column names it was fitted with (the graph's input is positional anyway)."""
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    booster = getattr(final, "get_booster", None)
    if booster is None or booster().feature_names is None:
        return model
    model = copy.deepcopy(model)
    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    final.get_booster().feature_names = None
    return model


def encoding_of(pipeline: Pipeline, inputs: tuple[InputField, ...]) -> tuple[list[dict], Any] | None:
    """(the Encoding's blocks, the final estimator) for Pipeline([ColumnTransformer of numeric SimpleImputers
    and (imputed) OneHotEncoder(handle_unknown="ignore")s, estimator]); None for anything else."""
    if not (isinstance(pipeline, Pipeline) and len(pipeline.steps) == 2
            and isinstance(pipeline.steps[0][1], ColumnTransformer)):
        return None
    features, estimator = pipeline.steps[0][1], pipeline.steps[1][1]
    text = {f.name for f in inputs if f.is_string}
    blocks: list[dict] = []
    for _, transformer, columns in features.transformers_:
        if transformer == "drop":
            continue
        found = _blocks(transformer, columns, text)
        if found is None:
            return None
        blocks += found
    width = sum(len(b["categories"]) if "categories" in b else 1 for b in blocks)
    covered = {b["column"] for b in blocks}
    if getattr(features, "sparse_output_", False) or width != getattr(estimator, "n_features_in_", None) \
            or covered != {f.name for f in inputs}:
        return None
    return blocks, estimator


def _blocks(transformer, columns, text: set[str]) -> list[dict] | None:
    if not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        return None
    if isinstance(transformer, SimpleImputer) and not set(columns) & text:
        fills = [float(v) for v in transformer.statistics_]
        if transformer.add_indicator or not _is_nan(transformer.missing_values) or len(fills) != len(columns) \
                or any(np.isnan(fills)):
            return None
        return [{"column": c, "fill": fill} for c, fill in zip(columns, fills, strict=True)]
    missing, encoder = None, transformer
    if isinstance(transformer, Pipeline) and len(transformer.steps) == 2:
        imputer, encoder = transformer.steps[0][1], transformer.steps[1][1]
        if not (isinstance(imputer, SimpleImputer) and imputer.strategy == "constant"
                and isinstance(imputer.fill_value, str) and not imputer.add_indicator):
            return None
        missing = imputer.fill_value
    if not (isinstance(encoder, OneHotEncoder) and set(columns) <= text and encoder.handle_unknown == "ignore"
            and encoder.drop_idx_ is None and not getattr(encoder, "_infrequent_enabled", False)):
        return None
    categories = [[c for c in values] for values in encoder.categories_]
    if not all(isinstance(c, str) for values in categories for c in values):
        return None
    return [{"column": c, "categories": values, "missing": missing} for c, values in zip(columns, categories, strict=True)]


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and np.isnan(value)


def canonical_bytes(model) -> bytes:
    """The same bytes for the same pipeline in every process. skl2onnx writes opset_import in set order, which
    follows PYTHONHASHSEED: unsorted, about one `pulumi up` in ten saw a new model.onnx, a new build context, a
    rebuilt image and a new revision with nothing changed. Each (domain, version) once: skl2onnx lists ("", 18) twice,
    which onnxruntime and the checker accept but a stricter reader need not (audit s11 F9)."""
    imports = sorted({(o.domain, o.version) for o in model.opset_import})
    del model.opset_import[:]
    for domain, version in imports:
        model.opset_import.add(domain=domain, version=version)
    return model.SerializeToString(deterministic=True)


def _fold_string_imputers(pipeline):
    """skl2onnx mis-handles constant imputers on strings, so drop them from the graph and let the
    scorer substitute the fill value for missing strings before it feeds the graph."""
    pipeline = copy.deepcopy(pipeline)
    fill_values = set()
    steps = pipeline.steps if isinstance(pipeline, Pipeline) else []
    for _, step in steps:
        if not isinstance(step, ColumnTransformer):
            continue
        for index, (name, transformer, columns) in enumerate(step.transformers_):
            if not isinstance(transformer, Pipeline) or len(transformer.steps) < 2:
                continue
            first = transformer.steps[0][1]
            if isinstance(first, SimpleImputer) and first.strategy == "constant" and isinstance(first.fill_value, str):
                fill_values.add(first.fill_value)
                rest = transformer.steps[1][1] if len(transformer.steps) == 2 else Pipeline(transformer.steps[1:])
                step.transformers_[index] = (name, rest, columns)
    if len(fill_values) > 1:
        raise CompileError(f"string imputers use different fill values {sorted(fill_values)}")
    return pipeline, (fill_values.pop() if fill_values else None)


def frame_to_columns(frame: pd.DataFrame, inputs: tuple[InputField, ...]) -> Columns:
    """The same column-major, None-for-missing form the API hands to the scorer."""
    return {f.name: [None if pd.isna(v) else v for v in frame[f.name].tolist()] for f in inputs}


def difference(reference: Scorer, candidate: Scorer, manifest: Manifest, columns: Columns) -> dict:
    """How far `candidate` is from `reference` on the same columns: a classifier's largest probability difference
    and how many labels differ; a regressor's largest difference relative to the value (see the module's docstring)."""
    expected, actual = reference.predict(columns), candidate.predict(columns)
    if expected.shape != actual.shape:
        return {"shape": [list(expected.shape), list(actual.shape)], "within_tolerance": False}
    if manifest.is_classifier:
        expected_labels = reference.answer("predict", columns)
        labels = candidate.answer("predict", columns)
        differing = sum(1 for a, b in zip(expected_labels, labels, strict=True) if a != b)
        return {"max_abs_probability_difference": float(np.max(np.abs(expected - actual), initial=0.0)),
                "labels_differing": differing}
    scale = np.maximum(np.abs(expected), 1e-3 * float(np.max(np.abs(expected), initial=0.0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(expected == actual, 0.0, np.abs(expected - actual) / scale)
    return {"max_relative_difference": float(np.nan_to_num(np.max(relative, initial=0.0), nan=np.inf))}


def within(found: dict, tolerance: float = EQUIVALENCE_TOLERANCE) -> bool:
    if "shape" in found:
        return False
    if "labels_differing" in found:
        return found["labels_differing"] == 0 and found["max_abs_probability_difference"] <= tolerance
    return found["max_relative_difference"] <= tolerance


def check_equivalence(reference: Scorer, candidate: Scorer, manifest: Manifest, records: pd.DataFrame,
                      tolerance: float = EQUIVALENCE_TOLERANCE) -> dict:
    """The difference (see difference()) with the rows and tolerance, or EquivalenceError saying how far it is."""
    found = difference(reference, candidate, manifest, frame_to_columns(records, manifest.inputs))
    found.update(rows=len(records), tolerance=tolerance)
    if not within(found, tolerance):
        measures = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in found.items()
                             if k not in ("rows", "tolerance"))
        raise EquivalenceError(f"differs from the registered model on {len(records)} records ({measures}; "
                               f"tolerance {tolerance:g})")
    return found


def max_probability_difference(pipeline: Any, compiled: Compiled, manifest: Manifest, records: pd.DataFrame) -> float:
    """A compiled classifier's largest probability difference from the pipeline it was compiled from."""
    found = difference(FrameScorer(pipeline, manifest), OnnxScorer(compiled.onnx_bytes, manifest), manifest,
                       frame_to_columns(records, manifest.inputs))
    return float(found.get("max_abs_probability_difference", np.inf))
