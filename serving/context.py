"""Assemble the docker build context for one registered model version.

This is the one implementation used by `make local`, by the Pulumi program's docker Image, and
by CI. Given `models:/<name>@<alias>` or `models:/<name>/<version>`, it writes:

    <out>/Dockerfile           serving/Dockerfile
    <out>/requirements.txt     the hash-locked serving runtime, serving/requirements.txt (plus scikit-learn & co.
                               for the fallback runtime, hashed when their wheels are downloaded)
    <out>/pip.sha256           the hash of the pip wheel the build runs from (serving/pip.txt), for sha256sum
    <out>/wheels/              every wheel the image installs: the build needs no network
    <out>/scoring/             the FastAPI app
    <out>/model/manifest.json  name, version, run id, source URI, runtime, input schema, content hash
    <out>/model/model.onnx     the compiled pipeline (onnx runtime only)
    <out>/model/mlflow/        the MLflow model directory (MLmodel, model.skops, drift baseline, ...)

    python -m serving.context models:/credit-default@champion .local/context
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from serving import compile as compiler
from serving import lock
from serving.scoring.model import MANIFEST_FILE, ONNX_FILE, Manifest

SERVING_DIR = Path(__file__).resolve().parent
APP_PACKAGE = SERVING_DIR / "scoring"
RUNTIME_REQUIREMENTS = SERVING_DIR / "requirements.txt"
DOCKERFILE = SERVING_DIR / "Dockerfile"
MLFLOW_SUBDIR = "mlflow"
SKOPS_FILE = "pipeline.skops"  # a pickled version, re-saved for the fallback runtime
# Records drawn by training from the drift baseline's aggregates (training/baseline.py equivalence_records), which
# the compiled model is checked on: used here, never shipped. A version carries no row of a real person.
EQUIVALENCE_ARTIFACT = "extra_files/equivalence_records.parquet"
FALLBACK_PACKAGES = ("scikit-learn", "pandas", "skops")
MANIFEST_FORMAT_VERSION = 1
DEFAULT_THRESHOLD = 0.5

# The image is CPython 3.11 on x86-64 Linux, whatever machine assembles the context (serving/lock.py hashes the
# same wheels).
WHEEL_PLATFORM_ARGS = lock.WHEEL_PLATFORM_ARGS
DEFAULT_WHEEL_CACHE = Path(os.environ.get("WHEEL_CACHE", Path.home() / ".cache" / "mlops-wheelhouse"))


class PackagingError(RuntimeError):
    pass


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    run_id: str | None  # None for a version registered from a path rather than a run
    source_uri: str

    @property
    def version_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class BuildContext:
    path: Path
    manifest: dict

    @property
    def model_version(self) -> str:
        return str(self.manifest["model"]["version"])


MODEL_URI = re.compile(r"^models:/(?P<name>[^@/]+(?:\.[^@/]+)*)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


def resolve_model(model_uri: str, client: MlflowClient | None = None) -> ResolvedModel:
    """`models:/name@alias` or `models:/name/version` -> a concrete registered version."""
    match = MODEL_URI.match(model_uri)
    if not match:
        raise PackagingError(f"model URI must look like models:/<name>@<alias> or models:/<name>/<version>, "
                             f"got {model_uri!r}")
    client = client or MlflowClient()
    name = match["name"]
    version = (client.get_model_version_by_alias(name, match["alias"]) if match["alias"]
               else client.get_model_version(name, match["version"]))
    return ResolvedModel(name=name, version=str(version.version), run_id=version.run_id, source_uri=model_uri)


def assemble_build_context(model_uri: str, out_dir: Path, *, client: MlflowClient | None = None,
                           wheelhouse: bool = True, wheel_cache: Path = DEFAULT_WHEEL_CACHE,
                           progress: Callable[[str], None] = print) -> BuildContext:
    """Build into a sibling folder and swap it in at the end: a refused model leaves no context."""
    client = client or MlflowClient()
    resolved = resolve_model(model_uri, client)
    progress(f"context: {model_uri} is {resolved.name} version {resolved.version} (run {resolved.run_id})")
    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        manifest = _assemble(resolved, partial, client, wheelhouse, wheel_cache, progress)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)
    progress(f"context: ready at {out_dir} (runtime {manifest['runtime']}, content {manifest['content_sha256'][:12]})")
    return BuildContext(out_dir, manifest)


def _assemble(resolved: ResolvedModel, out_dir: Path, client: MlflowClient, wheelhouse: bool, wheel_cache: Path,
              progress: Callable[[str], None]) -> dict:
    model_dir = out_dir / "model"
    manifest = prepare_model(resolved, model_dir, client, progress)
    shutil.copytree(APP_PACKAGE, out_dir / "scoring", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(DOCKERFILE, out_dir / "Dockerfile")
    locked, extras = _requirements(manifest["runtime"], model_dir / MLFLOW_SUBDIR)
    (out_dir / "wheels").mkdir()
    if wheelhouse:
        extras = _fill_wheelhouse(locked, extras, out_dir / "wheels", wheel_cache, progress)
    (out_dir / "requirements.txt").write_text(_render(manifest["runtime"], locked, extras))
    (out_dir / "pip.sha256").write_text("".join(f"{pin.hashes[0]}  {pin.wheel}\n" for pin in lock.pins(lock.PIP_LOCK)))

    manifest["content_sha256"] = content_hash(out_dir)
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def prepare_model(resolved: ResolvedModel, model_dir: Path, client: MlflowClient,
                  progress: Callable[[str], None] = print) -> dict:
    """The version's files in `model_dir` (the MLflow model, model.onnx when it compiles) and its manifest (without
    the content hash): the image's model, and the batch job's (serving/batch.py), from this one function, so both
    score with the same compiled graph after the same equivalence check."""
    with tempfile.TemporaryDirectory() as tmp:
        downloaded = Path(mlflow.artifacts.download_artifacts(resolved.version_uri, dst_path=tmp))
        probe = _read_equivalence_records(downloaded)
        shutil.copytree(downloaded, model_dir / MLFLOW_SUBDIR,
                        ignore=lambda d, names: [n for n in names if Path(d, n) == downloaded / EQUIVALENCE_ARTIFACT])
    mlflow_model = Model.load(str(model_dir / MLFLOW_SUBDIR))
    manifest = _manifest(resolved, mlflow_model, model_dir / MLFLOW_SUBDIR, client)

    pipeline = mlflow.sklearn.load_model(str(model_dir / MLFLOW_SUBDIR))
    if manifest["sklearn"]["format"] != "skops":
        manifest["sklearn"] = _resave_with_skops(pipeline, manifest["sklearn"], model_dir, progress)
    manifest.update(_compile(pipeline, manifest, probe, model_dir, progress))
    return manifest


def _resave_with_skops(pipeline, sklearn: dict, model_dir: Path, progress: Callable[[str], None]) -> dict:
    """A (cloud)pickled version (what the Databricks runtime's MLflow writes) goes into the image as skops, and
    its pickle not at all: the image's fallback runtime loads only the types listed, never arbitrary code."""
    import skops.io

    pickled = model_dir / sklearn["path"]
    skops.io.dump(pipeline, model_dir / SKOPS_FILE)
    pickled.unlink(missing_ok=True)
    progress(f"context: the version is {sklearn['format']}-serialized; the image gets it re-saved with skops")
    return {"path": SKOPS_FILE, "format": "skops", "trusted_types": skops.io.get_untrusted_types(file=model_dir / SKOPS_FILE)}


def _read_equivalence_records(model_dir: Path) -> pd.DataFrame | None:
    path = model_dir / EQUIVALENCE_ARTIFACT
    return pd.read_parquet(path) if path.exists() else None


def _manifest(resolved: ResolvedModel, mlflow_model: Model, mlflow_dir: Path, client: MlflowClient) -> dict:
    if mlflow_model.signature is None or mlflow_model.signature.inputs is None:
        raise PackagingError(f"{resolved.version_uri} has no signature: the API schema is generated from it")
    inputs = [{"name": spec.name, "type": spec.type.name} for spec in mlflow_model.signature.inputs.inputs]
    example = mlflow_model.load_input_example(str(mlflow_dir))
    if example is None:
        raise PackagingError(f"{resolved.version_uri} has no input example: the smoke test and /docs use it")
    example_records = json.loads(pd.DataFrame(example).to_json(orient="records"))
    sklearn_flavor = mlflow_model.flavors.get("sklearn", {})
    tags = client.get_model_version(resolved.name, resolved.version).tags
    return {
        "format_version": MANIFEST_FORMAT_VERSION,
        "model": {"name": resolved.name, "version": resolved.version, "run_id": resolved.run_id,
                  "source_uri": resolved.source_uri, "version_uri": resolved.version_uri},
        "decision_threshold": float(tags.get("decision_threshold", DEFAULT_THRESHOLD)),
        "mlflow_version": mlflow_model.mlflow_version,  # what /version answers, as `mlflow models serve` does
        "inputs": inputs,
        "input_example": example_records,
        "sklearn": {"path": f"{MLFLOW_SUBDIR}/{sklearn_flavor.get('pickled_model', 'model.skops')}",
                    "format": sklearn_flavor.get("serialization_format", "skops"),
                    "trusted_types": sklearn_flavor.get("skops_trusted_types") or []},
        "drift_baseline": f"{MLFLOW_SUBDIR}/extra_files/drift_baseline.json",
    }


def _compile(pipeline, manifest: dict, probe: pd.DataFrame | None, model_dir: Path,
             progress: Callable[[str], None]) -> dict:
    provisional = Manifest.from_dict({**manifest, "runtime": "sklearn", "missing_category": None})
    try:
        compiled = compiler.compile_pipeline(pipeline, provisional.inputs)
    except compiler.CompileError as error:
        progress(f"context: WARNING {error}; serving with the sklearn runtime (slower)")
        return {"runtime": "sklearn", "missing_category": None, "equivalence": None}
    sample = probe if probe is not None else pd.DataFrame(manifest["input_example"])
    checked = Manifest.from_dict({**manifest, "runtime": "onnx", "missing_category": compiled.missing_category})
    difference = compiler.check_equivalence(pipeline, compiled, checked, sample)
    (model_dir / ONNX_FILE).write_bytes(compiled.onnx_bytes)
    progress(f"context: compiled to ONNX; max |dp| {difference:.2e} on {len(sample)} records drawn from the baseline")
    return {"runtime": "onnx", "missing_category": compiled.missing_category,
            "equivalence": {"max_abs_probability_difference": difference, "rows": len(sample),
                            "tolerance": compiler.EQUIVALENCE_TOLERANCE}}


def _package_name(requirement: str) -> str:
    return re.split(r"[=<>!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def _requirements(runtime: str, mlflow_dir: Path) -> tuple[list[str], list[str]]:
    """(the hash-locked serving runtime's lines, the model's own pins of what the fallback runtime loads)."""
    locked = [line for line in RUNTIME_REQUIREMENTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    extras: list[str] = []
    if runtime == "sklearn":
        present = {_package_name(line) for line in locked}
        model_pins = (mlflow_dir / "requirements.txt").read_text().splitlines()
        extras = [pin for pin in model_pins
                  if _package_name(pin) in FALLBACK_PACKAGES and _package_name(pin) not in present]
    return locked, extras


def _render(runtime: str, locked: list[str], extras: list[str]) -> str:
    text = f"# generated by serving.context for the {runtime} runtime from serving/requirements.txt (hash-locked)\n"
    text += "\n".join(locked) + "\n"
    if extras:
        text += ("# The fallback runtime's packages, at the model's pins: not in the lock, so hashed when their wheels were\n"
                 "# downloaded for this context (the image build still installs them with --require-hashes).\n")
        text += "\n".join(extras) + "\n"
    return text


def _download(requirements: list[str], dest: Path, constraints: Sequence[str] = ()) -> None:
    try:
        lock.download(requirements, dest, constraints=constraints)
    except lock.LockError as error:
        raise PackagingError(f"downloading the image's wheels failed: {error}") from error


def _fill_wheelhouse(locked: list[str], extras: list[str], wheels: Path, cache: Path,
                     progress: Callable[[str], None]) -> list[str]:
    """pip download once per requirements set into a cache, then copy into the context; returns the extras' pins
    with the hashes of the wheels downloaded for them.

    The locked lines carry their hashes, so pip downloads in hash-checking mode: a wheel that is not the locked
    one fails here already. pip's own wheel comes from serving/pip.txt the same way."""
    bootstrap = [lock.format_pin(pin) for pin in lock.pins(lock.PIP_LOCK)]
    key = hashlib.sha256("\n".join([*locked, *bootstrap, *extras, *WHEEL_PLATFORM_ARGS]).encode()).hexdigest()[:16]
    cached = cache / key
    hashed_extras = cached / "extras.txt"
    if not (cached / ".complete").exists():
        progress(f"context: downloading wheels for linux/cp311 into {cached} (once per requirements set)")
        shutil.rmtree(cached, ignore_errors=True)
        cached.mkdir(parents=True)
        _download([*locked, *bootstrap], cached)
        lines = []
        if extras:
            known = {_package_name(line) for line in [*locked, *bootstrap]}
            constraints = [line.split()[0] for line in locked]  # the locked versions, without hashes
            _download(extras, cached, constraints)
            for name, wheel in sorted(lock.downloaded(cached).items()):
                if name not in known:
                    _, version, *_ = lock.wheel_name_version(wheel.name)
                    lines.append(lock.format_pin(lock.Pin(name, version, (lock.sha256(wheel),), wheel.name)))
        hashed_extras.write_text("".join(f"{line}\n" for line in lines))
        (cached / ".complete").touch()
    for wheel in sorted(cached.glob("*.whl")):
        shutil.copy2(wheel, wheels / wheel.name)
    progress(f"context: wheelhouse has {len(list(wheels.glob('*.whl')))} wheels")
    return hashed_extras.read_text().splitlines()


def content_hash(root: Path) -> str:
    """sha256 over every file's path and bytes, except the manifest that records it."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative == f"model/{MANIFEST_FILE}":
            continue
        digest.update(relative.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_uri", help="models:/<name>@<alias> or models:/<name>/<version>")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--registry-uri", default=os.environ.get("MLFLOW_REGISTRY_URI"))
    parser.add_argument("--no-wheels", action="store_true", help="skip the wheelhouse (local process only)")
    args = parser.parse_args(argv)
    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    if args.registry_uri:
        mlflow.set_registry_uri(args.registry_uri)
    try:
        context = assemble_build_context(args.model_uri, args.out_dir, wheelhouse=not args.no_wheels)
    except (PackagingError, compiler.EquivalenceError) as error:
        print(f"packaging failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"path": str(context.path), "model_version": context.model_version,
                      "content_sha256": context.manifest["content_sha256"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
