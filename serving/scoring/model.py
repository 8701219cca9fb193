"""The model baked into the image: its manifest and the scorer that runs it.

Two runtimes score the same way from the same column-major input:
- `onnx`: the pipeline compiled at packaging time (fast; the default),
- `sklearn`: the original pipeline loaded with skops, for models that cannot be compiled.
Packaging proves they agree (serving/compile.py) through these very classes.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"
PROBABILITY_OUTPUT = "probabilities"
ENCODING_KEY = "scoring.encoding"  # ONNX metadata: the Encoding of the single-input form
FEATURES_INPUT = "features"  # that form's one input: [n, Encoding.width] float32

Columns = Mapping[str, Sequence[Any]]  # column name -> one value per record (None = missing)


@dataclass(frozen=True)
class InputField:
    name: str
    type: str  # MLflow type: "string", "double", "float", "long", "integer", "boolean"

    @property
    def is_string(self) -> bool:
        return self.type == "string"


@dataclass(frozen=True)
class Manifest:
    model_name: str
    model_version: str
    run_id: str
    runtime: str
    decision_threshold: float
    inputs: tuple[InputField, ...]
    input_example: list[dict]
    missing_category: str | None
    sklearn_model_path: str
    skops_trusted_types: tuple[str, ...]
    raw: dict

    @classmethod
    def read(cls, model_dir: Path) -> Manifest:
        return cls.from_dict(json.loads((model_dir / MANIFEST_FILE).read_text()))

    @classmethod
    def from_dict(cls, raw: dict) -> Manifest:
        model = raw["model"]
        return cls(
            model_name=model["name"],
            model_version=str(model["version"]),
            run_id=model["run_id"],
            runtime=raw["runtime"],
            decision_threshold=float(raw["decision_threshold"]),
            inputs=tuple(InputField(f["name"], f["type"]) for f in raw["inputs"]),
            input_example=raw["input_example"],
            missing_category=raw.get("missing_category"),
            sklearn_model_path=raw["sklearn"]["path"],
            skops_trusted_types=tuple(raw["sklearn"]["trusted_types"]),
            raw=raw,
        )

    @property
    def input_names(self) -> list[str]:
        return [field.name for field in self.inputs]


class Scorer(Protocol):
    def predict_proba(self, columns: Columns) -> np.ndarray: ...


class Encoding:
    """How the signature's columns become the one float matrix a compiled estimator reads (ONNX metadata
    ENCODING_KEY, written by serving/compile.py): blocks in the matrix's column order, each a number (its
    missing values filled as the pipeline's imputer fills them) or a text column's one-hot block (an unknown
    value sets no column, as OneHotEncoder(handle_unknown="ignore") does). One input tensor instead of one
    per column: onnxruntime's cost per input and per node was most of a small request's scoring time."""

    def __init__(self, blocks: list[dict]) -> None:
        self.numbers: list[tuple[str, int, float]] = []  # (column, matrix position, fill for a missing value)
        self.one_hot: list[tuple[str, dict[str | None, int]]] = []  # (column, value -> matrix position)
        position = 0
        for block in blocks:
            if "categories" in block:
                lookup: dict[str | None, int] = {c: position + i for i, c in enumerate(block["categories"])}
                if block.get("missing") in lookup:
                    lookup[None] = lookup[block["missing"]]  # the imputer's fill value, folded in
                self.one_hot.append((block["column"], lookup))
                position += len(block["categories"])
            else:
                self.numbers.append((block["column"], position, float(block["fill"])))
                position += 1
        self.width = position
        self._zeros = array("f", bytes(4 * position))
        self._number_names = [name for name, _, _ in self.numbers]
        self._number_positions = np.array([p for _, p, _ in self.numbers], dtype=np.intp)
        self._fills = np.array([f for _, _, f in self.numbers], dtype=np.float64).reshape(-1, 1)

    @classmethod
    def from_json(cls, text: str) -> Encoding:
        return cls(json.loads(text)["blocks"])

    def matrix(self, columns: Columns) -> np.ndarray:
        """[n, width] float32: numbers as float32 (None filled), then 1.0 where a one-hot value is set."""
        n = len(columns[self._number_names[0] if self.numbers else self.one_hot[0][0]])
        return self._row(columns) if n == 1 else self._rows(columns, n)

    def _row(self, columns: Columns) -> np.ndarray:
        """One record into a copy of a zeroed float32 buffer (array.array casts each double to float32 as numpy
        does): numpy's per-call cost exceeds the work for a single row."""
        row = self._zeros[:]
        for name, position, fill in self.numbers:
            value = columns[name][0]
            row[position] = fill if value is None else value
        for name, lookup in self.one_hot:
            slot = lookup.get(columns[name][0])
            if slot is not None:
                row[slot] = 1.0
        return np.frombuffer(row, dtype=np.float32).reshape(1, self.width)

    def _rows(self, columns: Columns, n: int) -> np.ndarray:
        matrix = np.zeros((n, self.width + 1), dtype=np.float32)  # a spare last column takes unknown values
        if self.numbers:
            block = np.array([columns[name] for name in self._number_names], dtype=np.float64)  # None -> NaN
            missing = np.isnan(block)
            if missing.any():
                block = np.where(missing, self._fills, block)
            matrix[:, self._number_positions] = block.T
        if self.one_hot:
            spare = self.width
            hot = np.fromiter((lookup.get(value, spare) for name, lookup in self.one_hot for value in columns[name]),
                              dtype=np.intp, count=n * len(self.one_hot))
            matrix[np.tile(np.arange(n), len(self.one_hot)), hot] = 1.0
        return np.ascontiguousarray(matrix[:, :self.width])


class OnnxScorer:
    """Runs the compiled graph. With an Encoding in the model's metadata (serving/compile.py writes one when
    the pipeline's preprocessing is imputers and one-hot encoders), the graph is the estimator alone and
    takes one [n, width] float tensor built here; otherwise each column is its own [n, 1] tensor, the way
    skl2onnx compiled the whole pipeline."""

    def __init__(self, onnx_model: bytes | Path, manifest: Manifest) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One thread per worker: requests are tiny and workers scale out, not threads.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        source = str(onnx_model) if isinstance(onnx_model, Path) else onnx_model
        self.session = onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        # The C session's run with one reusable RunOptions: InferenceSession.run re-checks the feed's names
        # and makes a RunOptions per call, a fifth of a small request's scoring time. onnxruntime is pinned
        # (serving/requirements.txt); the warm-up prediction at start-up goes through this very call.
        self._run, self._run_options = self.session._sess.run, onnxruntime.RunOptions()
        encoding = self.session.get_modelmeta().custom_metadata_map.get(ENCODING_KEY)
        self.encoding = Encoding.from_json(encoding) if encoding else None
        self.fields = manifest.inputs
        self.text = [f.name for f in manifest.inputs if f.is_string]
        self.numbers = [f.name for f in manifest.inputs if not f.is_string]
        # The pipeline's constant imputer for strings was folded into this substitution at compile time.
        self.missing_category = manifest.missing_category or ""

    def feeds(self, columns: Columns) -> dict[str, np.ndarray]:
        if self.encoding is not None:
            return {FEATURES_INPUT: self.encoding.matrix(columns)}
        return self.column_feeds(columns)

    def column_feeds(self, columns: Columns) -> dict[str, np.ndarray]:
        """One array per type, [columns, n] (each row contiguous), then one [n, 1] view per column: two
        numpy conversions instead of one per column."""
        feeds: dict[str, np.ndarray] = {}
        if self.numbers:  # None becomes NaN, which the compiled imputer fills
            block = np.array([columns[name] for name in self.numbers], dtype=np.float32)
            feeds.update((name, block[i].reshape(-1, 1)) for i, name in enumerate(self.numbers))
        if self.text:
            block = np.array([self._filled(columns[name]) for name in self.text], dtype=object)
            feeds.update((name, block[i].reshape(-1, 1)) for i, name in enumerate(self.text))
        return feeds

    def _filled(self, values: Sequence) -> Sequence:
        return [self.missing_category if v is None else v for v in values] if None in values else values

    def predict_proba(self, columns: Columns) -> np.ndarray:
        return self.run(self.feeds(columns))

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """P(default) per record, from feeds() (apart so that the benchmark's profile can time each)."""
        return self._run([PROBABILITY_OUTPUT], feeds, self._run_options)[0][:, 1].astype(np.float64)


class SklearnScorer:
    """The uncompiled pipeline (needs pandas, scikit-learn and skops in the image)."""

    def __init__(self, model: Any, manifest: Manifest) -> None:
        self.model = model
        self.fields = manifest.inputs

    @classmethod
    def load(cls, model_dir: Path, manifest: Manifest) -> SklearnScorer:
        import skops.io

        model = skops.io.load(model_dir / manifest.sklearn_model_path, trusted=list(manifest.skops_trusted_types))
        return cls(model, manifest)

    def predict_proba(self, columns: Columns) -> np.ndarray:
        import pandas as pd

        frame = pd.DataFrame({
            f.name: pd.Series(columns[f.name], dtype=object if f.is_string else np.float64) for f in self.fields
        })
        return np.asarray(self.model.predict_proba(frame)[:, 1], dtype=np.float64)


def load_scorer(model_dir: Path, manifest: Manifest) -> Scorer:
    if manifest.runtime == "onnx":
        return OnnxScorer(model_dir / ONNX_FILE, manifest)
    if manifest.runtime == "sklearn":
        return SklearnScorer.load(model_dir, manifest)
    raise ValueError(f"manifest 'runtime' must be 'onnx' or 'sklearn', got {manifest.runtime!r}")


def records_to_columns(records: list[dict], names: list[str]) -> Columns:
    return {name: [record.get(name) for record in records] for name in names}
