"""Compile a registered scikit-learn pipeline to ONNX and prove it scores the same.

The pandas conversion dominates the pipeline's per-record cost; the compiled graph skips it.
Compilation happens once, at packaging time. Equivalence is checked with the serving code
itself (scoring.model.OnnxScorer against SklearnScorer) on records training drew from the drift
baseline (random draws, every quantile edge and the float below it, each category, unseen and missing
values; no row of a real person), and packaging refuses a compiled model whose probabilities differ by
more than the tolerance.
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

from serving.scoring.model import ENCODING_KEY, FEATURES_INPUT, Columns, InputField, Manifest, OnnxScorer, SklearnScorer

EQUIVALENCE_TOLERANCE = 1e-5
ONNX_OPSETS = {"": 18, "ai.onnx.ml": 3}


class CompileError(RuntimeError):
    """The pipeline has a step with no ONNX converter: serve it with the sklearn runtime."""


class EquivalenceError(RuntimeError):
    """The compiled model disagrees with the original: refuse to package it."""


@dataclass(frozen=True)
class Compiled:
    onnx_bytes: bytes
    missing_category: str | None


def compile_pipeline(pipeline: Pipeline, inputs: tuple[InputField, ...]) -> Compiled:
    """The estimator alone on one encoded float matrix when the preprocessing is imputers and one-hot
    encoders (the Encoding travels in the model's metadata); otherwise the whole pipeline, one input per column."""
    graph_pipeline, missing_category = _fold_string_imputers(pipeline)
    encoded = encoding_of(pipeline, inputs)
    if encoded is not None:
        blocks, estimator = encoded
        model = _to_onnx(estimator, [(FEATURES_INPUT, _float_type([None, estimator.n_features_in_]))], pipeline)
        model.metadata_props.add(key=ENCODING_KEY, value=json.dumps({"blocks": blocks}, sort_keys=True,
                                                                    separators=(",", ":")))
        return Compiled(canonical_bytes(model), missing_category)
    from skl2onnx.common.data_types import StringTensorType

    initial_types = [(f.name, StringTensorType([None, 1]) if f.is_string else _float_type([None, 1])) for f in inputs]
    return Compiled(canonical_bytes(_to_onnx(graph_pipeline, initial_types, pipeline)), missing_category)


def _float_type(shape: list):
    from skl2onnx.common.data_types import FloatTensorType

    return FloatTensorType(shape)


def _to_onnx(model, initial_types: list, pipeline: Pipeline):
    from skl2onnx import to_onnx

    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    try:
        return to_onnx(model, initial_types=initial_types, options={id(final): {"zipmap": False}},
                       target_opset=ONNX_OPSETS)
    except Exception as error:  # skl2onnx raises many types for "no converter"
        raise CompileError(f"cannot compile {type(pipeline).__name__} to ONNX: {error}") from error


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
    rebuilt image and a new revision with nothing changed."""
    imports = sorted((o.domain, o.version) for o in model.opset_import)
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


def max_probability_difference(pipeline: Pipeline, compiled: Compiled, manifest: Manifest,
                               records: pd.DataFrame) -> float:
    columns = frame_to_columns(records, manifest.inputs)
    expected = SklearnScorer(pipeline, manifest).predict_proba(columns)
    actual = OnnxScorer(compiled.onnx_bytes, manifest).predict_proba(columns)
    return float(np.max(np.abs(expected - actual)))


def check_equivalence(pipeline: Pipeline, compiled: Compiled, manifest: Manifest, records: pd.DataFrame,
                      tolerance: float = EQUIVALENCE_TOLERANCE) -> float:
    difference = max_probability_difference(pipeline, compiled, manifest, records)
    if not difference <= tolerance:
        raise EquivalenceError(
            f"compiled model differs from the registered pipeline by {difference:.3g} in probability on "
            f"{len(records)} records (tolerance {tolerance:g}); refusing to package it")
    return difference
