"""The model baked into the image: its manifest and the scorer that runs it.

Three runtimes score the same way from the same column-major input (serving/context.py chooses one at packaging,
and says why, in the manifest's `runtime_reason`):
- `onnx`: the model compiled at packaging time by skl2onnx (XGBoost and LightGBM through onnxmltools' converters):
  the fastest; needs onnxruntime and numpy only,
- `sklearn`: the original scikit-learn estimator, re-saved and loaded with skops (only scikit-learn's own types),
  for models that do not compile or whose compiled graph disagrees with them,
- `pyfunc`: the MLflow model loaded with `mlflow.pyfunc.load_model` in this process (mlflow imported here only),
  for anything else: a custom estimator class, a model skops cannot save, a flavor other than scikit-learn.
Packaging proves onnx and sklearn agree with the registered model through these very classes.

What a scorer answers depends on the model's task (the manifest's `task`):
- `binary`, `multiclass`: `predict` gives the probability of each class, [n, k] float64 in `classes` order,
- `regression`: `predict` gives the predicted value, [n] float64;
and `answer(predict_fn, ...)` gives what the version's MLflow pyfunc answers with that predict_fn (the labels of
`predict` for a classifier), for MLflow's protocol when it is not the probabilities or values themselves.

Manifest format (model/manifest.json, `format_version` 2; written by serving/context.py):
  model             {name, version, run_id, source_uri, version_uri, description}
  task, classes     binary | multiclass | regression; the classes in the order of the probabilities (null: regression)
  decision_threshold  a binary model's cut for its label (the version's tag), or null: the estimator's own rule
  predict_fn        what the MLflow pyfunc (and so /invocations) answers: "predict_proba", "predict", ...
  runtime, runtime_reason   onnx | sklearn | pyfunc, and one sentence saying why
  inputs            the signature's columns, each {name, type} plus, from the contract when the version has one,
                    description, minimum, maximum, greater_than, less_than, values, open
  input_example     records (the version's own example, or one built from the signature: input_example_source)
  contract          the version's extra_files/contract.json, or null
  drift_baseline    the path of the drift baseline under model/, or null
  sklearn           {path, format, trusted_types} of the skops file (sklearn runtime), else null
  pyfunc            {path} of the MLflow model directory (pyfunc runtime), else null
  missing_category, equivalence, mlflow_version, content_sha256

Why one module: the manifest and the three runtimes' scorers are read together by the app, the batch job and
packaging's equivalence check; apart, each would import the others.
"""

from __future__ import annotations

import json
import math
import struct
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Protocol

import numpy as np

MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"
# skl2onnx's own graph beside a rewritten model.onnx (serving/compile.py Compiled.few_records_bytes): scores requests of
# at most FEW_RECORDS records. Measured on the example model (200 trees), in a server under load: one record costs
# about 14 µs of CPU less on it; from about 8 records on, the rewritten graph is the faster (100 records: 140 µs
# against 183 µs in onnxruntime alone).
FEW_RECORDS_ONNX_FILE = "model.few-records.onnx"
FEW_RECORDS = 8
PROBABILITY_OUTPUT = "probabilities"
LABEL_OUTPUT = "label"
ENCODING_KEY = "scoring.encoding"  # ONNX metadata: the Encoding of the single-input form
FEATURES_INPUT = "features"  # that form's one input: [n, Encoding.width] float32
TASKS = ("binary", "multiclass", "regression")
RUNTIMES = ("onnx", "sklearn", "pyfunc")
CLASSIFIERS = ("binary", "multiclass")

Columns = Mapping[str, Sequence[Any]]  # column name -> one value per record (None = missing)
NUMBER_TYPES = ("double", "float", "long", "integer")  # the types a contract's bounds apply to (not boolean)
WHOLE = {"ge": math.ceil, "le": math.floor, "gt": math.floor, "lt": math.ceil}  # an integer column's (see bounds())
# The contract's rules as every refusal words them (the service's, scoring/core.py, and the batch job's).
RULE_WORDS = {"ge": "at least", "le": "at most", "gt": "greater than", "lt": "less than", "in": "one of"}


def rule_text(rule: str, allowed: object) -> str:
    """'at least 18' (not 18.0: as the contract's author wrote it), "one of 'a', 'b'": a rule of RULE_WORDS."""
    if isinstance(allowed, float) and allowed.is_integer():
        allowed = int(allowed)
    return f"{RULE_WORDS[rule]} {allowed}"


@dataclass(frozen=True)
class InputField:
    name: str
    type: str  # MLflow type: "string", "double", "float", "long", "integer", "boolean"
    description: str = ""
    minimum: float | None = None  # inclusive bounds and exclusive ones, from the contract: enforced as bounds() says
    maximum: float | None = None
    greater_than: float | None = None
    less_than: float | None = None
    values: tuple[str, ...] | None = None  # a category's allowed values
    open: bool = False  # the contract expects values beyond `values` (an unseen one is scored as the model scores it)

    @property
    def is_string(self) -> bool:
        return self.type == "string"

    @property
    def closed_values(self) -> tuple[str, ...] | None:
        """The only values a text column takes (its contract lists them and is not `open`), else None."""
        return self.values if self.is_string and self.values is not None and not self.open else None

    def bounds(self) -> dict[str, float]:
        """The bounds a number must meet, as every consumer enforces them (schemas.py, fastpath.py, serving/batch.py):
        {"ge" or "gt": lower, "le" or "lt": upper}, a side's stricter one (msgspec takes one a side); an integer
        column's, the integer one that admits the same integers (pydantic's int takes no other): ge 17.5 -> ge 18,
        le 99.5 -> le 99, gt 0.5 -> gt 0, lt 2.5 -> lt 3. Empty for text and booleans."""
        if self.type not in NUMBER_TYPES:
            return {}
        whole, found = self.type in ("long", "integer"), dict[str, float]()
        for sign, side in ((1, (("ge", self.minimum), ("gt", self.greater_than))),
                           (-1, (("le", self.maximum), ("lt", self.less_than)))):
            given = [(op, WHOLE[op](value) if whole else value) for op, value in side if value is not None]
            if given:  # the further in; at a tie, the exclusive one
                *_, op, bound = max((sign * bound, op in ("gt", "lt"), op, bound) for op, bound in given)
                found[op] = bound
        return found

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> InputField:
        values = raw.get("values")
        return cls(raw["name"], raw["type"], raw.get("description") or "", raw.get("minimum"), raw.get("maximum"),
                   raw.get("greater_than"), raw.get("less_than"), tuple(values) if values is not None else None,
                   bool(raw.get("open", False)))


@dataclass(frozen=True)
class Manifest:
    model_name: str
    model_version: str
    run_id: str | None
    runtime: str
    task: str
    classes: tuple[Any, ...] | None
    decision_threshold: float | None
    predict_fn: str
    inputs: tuple[InputField, ...]
    input_example: list[dict]
    missing_category: str | None
    sklearn_model_path: str | None
    skops_trusted_types: tuple[str, ...]
    pyfunc_path: str | None
    description: str
    contract: dict | None
    raw: dict

    @classmethod
    def read(cls, model_dir: Path) -> Manifest:
        return cls.from_dict(json.loads((model_dir / MANIFEST_FILE).read_text()))

    @classmethod
    def from_dict(cls, raw: dict) -> Manifest:
        model = raw["model"]
        task = raw.get("task", "binary")  # format 1 knew binary classifiers only
        if task not in TASKS:
            raise ValueError(f"manifest 'task' must be one of {', '.join(TASKS)}, got {task!r}")
        classes = raw.get("classes", [0, 1] if "task" not in raw else None)
        threshold = raw.get("decision_threshold")
        sklearn, pyfunc = raw.get("sklearn") or {}, raw.get("pyfunc") or {}
        return cls(
            model_name=model["name"],
            model_version=str(model["version"]),
            run_id=model.get("run_id"),
            runtime=raw["runtime"],
            task=task,
            classes=tuple(classes) if classes is not None else None,
            decision_threshold=float(threshold) if threshold is not None else None,
            predict_fn=raw.get("predict_fn") or ("predict_proba" if "task" not in raw else "predict"),
            inputs=tuple(InputField.from_dict(f) for f in raw["inputs"]),
            input_example=raw["input_example"],
            missing_category=raw.get("missing_category"),
            sklearn_model_path=sklearn.get("path"),
            skops_trusted_types=tuple(sklearn.get("trusted_types") or ()),
            pyfunc_path=pyfunc.get("path"),
            description=model.get("description") or "",
            contract=raw.get("contract"),
            raw=raw,
        )

    @property
    def input_names(self) -> list[str]:
        return [field.name for field in self.inputs]

    @property
    def is_classifier(self) -> bool:
        return self.task in CLASSIFIERS

    @property
    def target(self) -> dict:
        """The contract's target ({name, task, classes, description}), or what the manifest tells of it."""
        if self.contract and self.contract.get("target"):
            return self.contract["target"]
        return {"name": "prediction", "task": self.task, "classes": list(self.classes or []) or None, "description": ""}


class Scorer(Protocol):
    def predict(self, columns: Columns) -> np.ndarray:
        """A classifier's probabilities [n, k] (float64, in `classes` order), a regressor's values [n] (float64)."""

    def answer(self, predict_fn: str, columns: Columns) -> Any:
        """What the version's MLflow pyfunc answers with `predict_fn`, as JSON-able values (MLflow's own rule)."""

    def predict_and_answer(self, predict_fn: str, columns: Columns) -> tuple[np.ndarray, Any]:
        """predict() and answer() together (a runtime that can, in one call of the model)."""


def jsonable(value: Any) -> Any:
    """The JSON form MLflow's scoring server gives a prediction (mlflow.utils.proto_json_utils._get_jsonable_obj):
    an array as nested lists, a DataFrame as records, a Series as the records of its one-column frame."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    kind = type(value).__name__
    if kind == "DataFrame":
        return json.loads(value.to_json(orient="records"))
    if kind == "Series":
        return json.loads(value.to_frame().to_json(orient="records"))
    return value


class Encoding:
    """How the signature's columns become the one float matrix a compiled estimator reads (ONNX metadata
    ENCODING_KEY, written by serving/compile.py): blocks in the matrix's column order, each a number (its
    missing values filled as the pipeline's imputer fills them) or a text column's one-hot block (an unknown
    value sets no column, as OneHotEncoder(handle_unknown="ignore") does). One input tensor instead of one
    per column: onnxruntime's cost per input and per node was most of a small request's scoring time."""

    def __init__(self, blocks: list[dict]) -> None:
        self.numbers: list[tuple[str, int, float]] = []  # (column, matrix position, fill for a missing value)
        self.one_hot: list[tuple[str, _Slots]] = []  # (column, value -> matrix position)
        position = 0
        for block in blocks:
            if "categories" in block:
                lookup = _Slots({c: position + i for i, c in enumerate(block["categories"])})
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
        self._fills = np.array([f for _, _, f in self.numbers], dtype=np.float32).reshape(-1, 1)

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
        """The matrix's first n rows of a zeroed (n + 1, width) buffer: a value no one-hot block knows lands in the
        spare last row, so the rows returned are a contiguous view, no copy. Numbers are read as doubles (None -> NaN,
        then the fill) and round to float32 in the matrix, as a double converted straight to float32 would."""
        width = self.width
        flat = np.zeros((n + 1) * width, dtype=np.float32)
        matrix = flat.reshape(n + 1, width)
        if self.numbers:
            doubles = f"{n}d"  # struct's format for a column
            block = np.frombuffer(b"".join([_doubles(columns[name], doubles) for name in self._number_names]),
                                  dtype=np.float64).reshape(len(self.numbers), n)
            missing = np.isnan(block)
            if missing.any():
                block = np.where(missing, self._fills, block)
            matrix[:n, self._number_positions] = block.T
        if self.one_hot:
            # Each value's slot, packed by struct in one C loop (numpy's fromiter converts an int at a time, slower).
            slots = struct.pack(f"{n * len(self.one_hot)}n", *chain.from_iterable(
                map(lookup.__getitem__, columns[name]) for name, lookup in self.one_hot))
            hot = (np.frombuffer(slots, dtype=np.intp).reshape(len(self.one_hot), n)
                   + np.arange(0, n * width, width, dtype=np.intp))  # + each row's start
            np.minimum(hot, n * width, out=hot)  # an unknown value (UNKNOWN_SLOT) -> the spare row
            flat[hot] = 1.0
        return matrix[:n]


def _doubles(values: Sequence, doubles: str) -> bytes:
    """A column's numbers as doubles (`doubles`: "<n>d"): struct packs a list or tuple of floats (and ints) in one C
    loop, several times faster than numpy reads Python floats; a None (missing), or anything struct refuses, through
    numpy (None -> NaN)."""
    if type(values) in (tuple, list):
        try:
            return struct.pack(doubles, *values)
        except struct.error:
            pass
    return np.asarray(values, dtype=np.float64).tobytes()


UNKNOWN_SLOT = np.iinfo(np.intp).max // 4  # past any row: _rows sends it to its spare row


class _Slots(dict[str | None, int]):
    """A one-hot block's value -> matrix position; an unknown value -> UNKNOWN_SLOT. Looked up with map(__getitem__):
    C per value, Python (__missing__) only for an unknown one."""

    def __missing__(self, value: object) -> int:
        return UNKNOWN_SLOT


class OnnxScorer:
    """Runs the compiled graph. With an Encoding in the model's metadata (serving/compile.py writes one when
    the pipeline's preprocessing is imputers and one-hot encoders), the graph is the estimator alone and
    takes one [n, width] float tensor built here; otherwise each column is its own [n, 1] tensor, the way
    skl2onnx compiled the whole pipeline. A classifier's graph answers `label` and `probabilities` (no zipmap),
    a regressor's one [n, 1] output. `few_records`, another graph of the same model (the same inputs and outputs)
    that scores requests of at most FEW_RECORDS records."""

    def __init__(self, onnx_model: bytes | Path, manifest: Manifest, few_records: bytes | Path | None = None) -> None:
        import onnxruntime

        self.session = _session(onnx_model)
        # The C session's run with one reusable RunOptions: InferenceSession.run re-checks the feed's names
        # and makes a RunOptions per call, a fifth of a small request's scoring time. onnxruntime is pinned
        # (serving/requirements.txt); the warm-up prediction at start-up goes through this very call.
        self._run, self._run_options = self.session._sess.run, onnxruntime.RunOptions()
        self._few_run = None if few_records is None else _session(few_records)._sess.run
        encoding = self.session.get_modelmeta().custom_metadata_map.get(ENCODING_KEY)
        self.encoding = Encoding.from_json(encoding) if encoding else None
        self.fields = manifest.inputs
        self.text = [f.name for f in manifest.inputs if f.is_string]
        self.numbers = [f.name for f in manifest.inputs if not f.is_string]
        # The pipeline's constant imputer for strings was folded into this substitution at compile time.
        self.missing_category = manifest.missing_category or ""
        outputs = [o.name for o in self.session.get_outputs()]
        self.classifier = manifest.is_classifier
        self.output = [PROBABILITY_OUTPUT if self.classifier else outputs[-1]]
        self.classes = list(manifest.classes or ())

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

    def predict(self, columns: Columns) -> np.ndarray:
        return self.run(self.feeds(columns))

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The task's array from feeds() (apart so that the benchmark's profile can time each)."""
        found = self.graph_for(feeds)(self.output, feeds, self._run_options)[0]
        return found.astype(np.float64) if self.classifier else found.reshape(-1).astype(np.float64)

    def graph_for(self, feeds: dict[str, np.ndarray]) -> Any:
        """The session run that scores these feeds: the few-records graph's for at most FEW_RECORDS rows."""
        if self._few_run is not None and len(next(iter(feeds.values()))) <= FEW_RECORDS:
            return self._few_run
        return self._run

    def labels(self, columns: Columns) -> list:
        """The compiled estimator's own labels (its `predict`), in the classes' JSON types."""
        feeds = self.feeds(columns)
        found = self.graph_for(feeds)([LABEL_OUTPUT], feeds, self._run_options)[0]
        return [self.classes[i] for i in _class_indices(found, self.classes)]

    def predict_and_answer(self, predict_fn: str, columns: Columns) -> tuple[np.ndarray, Any]:
        """A classifier's probabilities and its own labels from one run of the graph (one features matrix)."""
        if predict_fn != "predict" or not self.classifier:
            array = self.predict(columns)
            return array, self.answer(predict_fn, columns)
        feeds = self.feeds(columns)
        probabilities, found = self.graph_for(feeds)([PROBABILITY_OUTPUT, LABEL_OUTPUT], feeds, self._run_options)
        return probabilities.astype(np.float64), [self.classes[i] for i in _class_indices(found, self.classes)]

    def answer(self, predict_fn: str, columns: Columns) -> Any:
        if predict_fn == "predict" and self.classifier:
            return self.labels(columns)
        if predict_fn == "predict" or predict_fn == "predict_proba":
            return self.predict(columns).tolist()
        raise ValueError(f"the onnx runtime answers predict and predict_proba, not {predict_fn}")


def _class_indices(labels: np.ndarray, classes: list) -> list[int]:
    """Each label's position in `classes` (an ONNX label is the class value, typed int64 or string)."""
    position = {str(c): i for i, c in enumerate(classes)}
    return [position[str(label)] for label in labels.tolist()]


class FrameScorer:
    """A runtime that scores a pandas DataFrame built the way MLflow's schema enforcement builds it from the
    signature: text as object, double as float64, float as float32, long/integer as int64/int32 (float64 when a
    value is missing), boolean as bool (object when one is missing)."""

    def __init__(self, model: Any, manifest: Manifest) -> None:
        self.model = model
        self.fields = manifest.inputs
        self.classifier = manifest.is_classifier

    def frame(self, columns: Columns) -> Any:
        import pandas as pd

        return pd.DataFrame({f.name: pd.Series(list(columns[f.name]), dtype=_dtype(f.type, columns[f.name]))
                             for f in self.fields})

    def predict(self, columns: Columns) -> np.ndarray:
        frame = self.frame(columns)
        if self.classifier:
            return np.asarray(self.model.predict_proba(frame), dtype=np.float64)
        return np.asarray(self.model.predict(frame), dtype=np.float64).reshape(-1)

    def answer(self, predict_fn: str, columns: Columns) -> Any:
        return jsonable(getattr(self.model, predict_fn)(self.frame(columns)))

    def predict_and_answer(self, predict_fn: str, columns: Columns) -> tuple[np.ndarray, Any]:
        return self.predict(columns), self.answer(predict_fn, columns)


def _dtype(kind: str, values: Sequence) -> Any:
    if kind == "string":
        return object
    missing = any(v is None or v != v for v in values)  # None, or NaN (the batch job's missing number)
    if kind in ("long", "integer"):
        return np.float64 if missing else (np.int64 if kind == "long" else np.int32)
    if kind == "boolean":
        return object if missing else bool
    return np.float32 if kind == "float" else np.float64


class SklearnScorer(FrameScorer):
    """The uncompiled estimator, loaded with skops trusting only the types packaging listed (needs pandas,
    scikit-learn and skops in the image)."""

    @classmethod
    def load(cls, model_dir: Path, manifest: Manifest) -> SklearnScorer:
        import skops.io

        if manifest.sklearn_model_path is None:
            raise ValueError("the manifest names no skops file for the sklearn runtime")
        model = skops.io.load(model_dir / manifest.sklearn_model_path, trusted=list(manifest.skops_trusted_types))
        return cls(model, manifest)


class PyfuncScorer(FrameScorer):
    """The MLflow model itself (`mlflow.pyfunc.load_model`; the image has mlflow-skinny and the model's own
    requirements). Outputs come from the raw model's predict_proba/predict where it has them (a scikit-learn-like
    estimator: `get_raw_model()`), else from the pyfunc's predict; MLflow's protocol gets the pyfunc's own answer."""

    def __init__(self, pyfunc: Any, manifest: Manifest) -> None:
        try:
            raw = pyfunc.get_raw_model()
        except Exception:  # a flavor without a raw model to hand
            raw = None
        sklearn_like = raw is not None and callable(getattr(raw, "predict_proba" if manifest.is_classifier else "predict",
                                                           None)) and not _is_python_model(raw)
        super().__init__(raw if sklearn_like else None, manifest)
        self.pyfunc, self.predict_fn = pyfunc, manifest.predict_fn

    @classmethod
    def load(cls, model_dir: Path, manifest: Manifest) -> PyfuncScorer:
        import mlflow.pyfunc  # only this runtime imports mlflow (mlflow-skinny in its image)

        if manifest.pyfunc_path is None:
            raise ValueError("the manifest names no MLflow model directory for the pyfunc runtime")
        return cls(mlflow.pyfunc.load_model(str(model_dir / manifest.pyfunc_path)), manifest)

    def predict(self, columns: Columns) -> np.ndarray:
        if self.model is not None:
            return super().predict(columns)
        answer = np.asarray(self.pyfunc.predict(self.frame(columns)), dtype=np.float64)
        return answer if self.classifier else answer.reshape(-1)

    def answer(self, predict_fn: str, columns: Columns) -> Any:
        if self.model is not None and predict_fn in ("predict", "predict_proba"):
            return super().answer(predict_fn, columns)
        return jsonable(self.pyfunc.predict(self.frame(columns)))


def _is_python_model(raw: Any) -> bool:
    """An mlflow.pyfunc.PythonModel: its predict takes (context, model_input), unlike an estimator's."""
    return any(base.__name__ == "PythonModel" and base.__module__.startswith("mlflow") for base in type(raw).__mro__)


def _session(onnx_model: bytes | Path) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One thread per worker: requests are tiny and workers scale out, not threads.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    source = str(onnx_model) if isinstance(onnx_model, Path) else onnx_model
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def load_scorer(model_dir: Path, manifest: Manifest) -> Scorer:
    if manifest.runtime == "onnx":
        few_records = model_dir / FEW_RECORDS_ONNX_FILE
        return OnnxScorer(model_dir / ONNX_FILE, manifest, few_records if few_records.exists() else None)
    if manifest.runtime == "sklearn":
        return SklearnScorer.load(model_dir, manifest)
    if manifest.runtime == "pyfunc":
        return PyfuncScorer.load(model_dir, manifest)
    raise ValueError(f"manifest 'runtime' must be one of {', '.join(RUNTIMES)}, got {manifest.runtime!r}")


def check_outputs(array: np.ndarray, manifest: Manifest, rows: int) -> None:
    """The warm-up's check of a scorer's answer: its shape, and probabilities in [0, 1] for a classifier."""
    if manifest.is_classifier:
        width = len(manifest.classes or ())
        if array.shape != (rows, width) or not ((array >= 0) & (array <= 1)).all():
            raise ValueError(f"expected {rows} x {width} probabilities in [0, 1], got {array!r}")
    elif array.shape != (rows,):
        raise ValueError(f"expected {rows} values, got an array of shape {array.shape}")


def records_to_columns(records: list[dict], names: list[str]) -> Columns:
    return {name: [record.get(name) for record in records] for name in names}
