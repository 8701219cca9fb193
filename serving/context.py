"""Assemble the docker build context for one MLflow model version: any tabular model, from its MLflow files alone.

This is the one implementation used by `make local`, `make serve`, the Pulumi program's docker Image, the batch
job and CI. Given `models:/<name>@<alias>`, `models:/<name>/<version>`, `runs:/<run id>/<path>` or a local MLflow
model directory, it writes:

    <out>/Dockerfile           serving/Dockerfile
    <out>/requirements.txt     the hash-locked serving runtime, serving/requirements.txt, plus the runtime's own
                               packages at the model's pins (sklearn: scikit-learn, pandas, skops; pyfunc:
                               mlflow-skinny and the model's requirements), hashed when their wheels are downloaded
    <out>/pip.sha256           the hash of the pip wheel the build runs from (serving/pip.txt), for sha256sum
    <out>/wheels/              every wheel the image installs: the build needs no network
    <out>/scoring/             the FastAPI app
    <out>/model/manifest.json  what the app serves and how (format: serving/scoring/model.py)
    <out>/model/model.onnx     the compiled model (onnx runtime only)
    <out>/model/pipeline.skops the estimator re-saved with skops (sklearn runtime, when the version's is a pickle)
    <out>/model/mlflow/        the MLflow model directory (MLmodel, contract, drift baseline, ...)

    python -m serving.context models:/my-model@champion .local/context

The runtime (onnx, else sklearn, else pyfunc) is chosen by serving/runtime.py, which prints why. The task: the
version's contract.json when it has one (checked against the estimator); else a scikit-learn estimator's
is_classifier and len(classes_); else (a pyfunc-only model) a classifier when its raw model has classes_ and
predict_proba, and a regressor otherwise.
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
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from serving import compile as compiler
from serving import lock
from serving.manifest import CONTRACT_ARTIFACT, build_manifest
from serving.runtime import MLFLOW_SUBDIR, PackagingError, choose_runtime
from serving.scoring.model import MANIFEST_FILE

SERVING_DIR = Path(__file__).resolve().parent
APP_PACKAGE = SERVING_DIR / "scoring"
RUNTIME_REQUIREMENTS = SERVING_DIR / "requirements.txt"
DOCKERFILE = SERVING_DIR / "Dockerfile"
# Records drawn by training from the drift baseline's aggregates (training/baseline.py equivalence_records), which
# the compiled model is checked on: used here, never shipped. A version carries no row of a real person.
EQUIVALENCE_ARTIFACT = "extra_files/equivalence_records.parquet"
FALLBACK_PACKAGES = ("scikit-learn", "pandas", "skops")

# The image is CPython 3.11 on x86-64 Linux, whatever machine assembles the context (serving/lock.py hashes the
# same wheels).
WHEEL_PLATFORM_ARGS = lock.WHEEL_PLATFORM_ARGS
DEFAULT_WHEEL_CACHE = Path(os.environ.get("WHEEL_CACHE", Path.home() / ".cache" / "mlops-wheelhouse"))


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    run_id: str | None  # None for a version registered from a path rather than a run
    source_uri: str
    artifact_uri: str | None = None  # what to download: the registered version's URI unless given
    registered: bool = True

    @property
    def version_uri(self) -> str:
        return self.artifact_uri or f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class BuildContext:
    path: Path
    manifest: dict

    @property
    def model_version(self) -> str:
        return str(self.manifest["model"]["version"])


MODEL_URI = re.compile(r"^models:/(?P<name>[^@/]+(?:\.[^@/]+)*)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")
RUN_URI = re.compile(r"^runs:/(?P<run>[0-9a-zA-Z]+)/(?P<path>.+)$")
URI_FORMS = "models:/<name>@<alias>, models:/<name>/<version>, runs:/<run id>/<path> or a local model directory"


def resolve_model(model_uri: str, client: MlflowClient | None = None) -> ResolvedModel:
    """A model URI -> a concrete model: a registered version (by alias or number), a run's model (named after its
    artifact path, versioned by the run id) or a local MLflow model directory (named after it, version "local")."""
    run = RUN_URI.match(model_uri)
    if run:
        path = run["path"].strip("/")
        return ResolvedModel(name=path.split("/")[-1], version=run["run"], run_id=run["run"], source_uri=model_uri,
                             artifact_uri=model_uri, registered=False)
    local = Path(model_uri.removeprefix("file://"))
    if not model_uri.startswith(("models:/", "runs:/")) and (local / "MLmodel").is_file():
        return ResolvedModel(name=local.resolve().name, version="local", run_id=None, source_uri=model_uri,
                             artifact_uri=str(local.resolve()), registered=False)
    match = MODEL_URI.match(model_uri)
    if not match:
        raise PackagingError(f"model URI must be one of {URI_FORMS}, got {model_uri!r}")
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
    locked, extras = _requirements(manifest, model_dir / MLFLOW_SUBDIR)
    (out_dir / "wheels").mkdir()
    if wheelhouse:
        extras = _fill_wheelhouse(locked, extras, out_dir / "wheels", wheel_cache, progress)
    (out_dir / "requirements.txt").write_text(_render(manifest["runtime"], locked, extras, hashed=wheelhouse))
    (out_dir / "pip.sha256").write_text("".join(f"{pin.hashes[0]}  {pin.wheel}\n" for pin in lock.pins(lock.PIP_LOCK)))

    manifest["content_sha256"] = content_hash(out_dir)
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def prepare_model(resolved: ResolvedModel, model_dir: Path, client: MlflowClient,
                  progress: Callable[[str], None] = print) -> dict:
    """The version's files in `model_dir` (the MLflow model; model.onnx or pipeline.skops by runtime) and its manifest
    (without the content hash): the image's model, and the batch job's (serving/batch.py), from this one function, so
    both score with the same runtime after the same equivalence check."""
    mlflow_dir = model_dir / MLFLOW_SUBDIR
    with tempfile.TemporaryDirectory() as tmp:
        if resolved.registered or resolved.artifact_uri is None or not Path(resolved.artifact_uri).is_dir():
            downloaded = Path(mlflow.artifacts.download_artifacts(resolved.version_uri, dst_path=tmp))
        else:
            downloaded = Path(resolved.artifact_uri)
        probe = _read_equivalence_records(downloaded)
        shutil.copytree(downloaded, mlflow_dir,
                        ignore=lambda d, names: [n for n in names if Path(d, n) == downloaded / EQUIVALENCE_ARTIFACT])
    mlflow_model = Model.load(str(mlflow_dir))
    contract_path = mlflow_dir / CONTRACT_ARTIFACT
    contract = json.loads(contract_path.read_text()) if contract_path.is_file() else None
    estimator = _load_estimator(mlflow_dir) if "sklearn" in mlflow_model.flavors else None
    pyfunc = None if estimator is not None else _load_pyfunc(mlflow_dir)
    manifest = build_manifest(resolved, mlflow_model, mlflow_dir, client, contract, estimator, pyfunc)
    manifest.update(choose_runtime(estimator, manifest, probe, model_dir, mlflow_model, progress))
    return manifest


def _load_estimator(mlflow_dir: Path) -> Any:
    try:
        return mlflow.sklearn.load_model(str(mlflow_dir))
    except Exception as error:
        raise PackagingError(f"MLflow cannot load its scikit-learn model here ({type(error).__name__}: {error}): "
                             "packaging needs the model's own libraries installed") from error


def _load_pyfunc(mlflow_dir: Path) -> Any:
    try:
        return mlflow.pyfunc.load_model(str(mlflow_dir))
    except Exception as error:
        raise PackagingError(f"MLflow cannot load the model here ({type(error).__name__}: {error}), so neither can "
                             "the image") from error


def _read_equivalence_records(model_dir: Path) -> pd.DataFrame | None:
    path = model_dir / EQUIVALENCE_ARTIFACT
    return pd.read_parquet(path) if path.exists() else None


def _package_name(requirement: str) -> str:
    return re.split(r"[=<>!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def _requirements(manifest: dict, mlflow_dir: Path) -> tuple[list[str], list[str]]:
    """(the hash-locked serving runtime's lines, the runtime's own packages at the model's pins): nothing for onnx;
    scikit-learn, pandas and skops for sklearn; mlflow-skinny at packaging's MLflow version and the model's own
    requirements for pyfunc. A package the lock pins keeps the lock's version (the app runs on it)."""
    locked = [line for line in RUNTIME_REQUIREMENTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    present = {_package_name(line) for line in locked}
    runtime = manifest["runtime"]
    if runtime == "onnx":
        return locked, []
    model_pins = _model_requirements(mlflow_dir)
    if runtime == "sklearn":
        import sklearn
        import skops

        installed = {"scikit-learn": sklearn.__version__, "pandas": pd.__version__, "skops": skops.__version__}
        pinned = {_package_name(pin): pin for pin in model_pins if _package_name(pin) in FALLBACK_PACKAGES}
        # skops loads what this process saved: at this process's version unless the model pins its own.
        extras = [pinned.get(name, f"{name}=={installed[name]}") for name in FALLBACK_PACKAGES]
        return locked, [pin for pin in extras if _package_name(pin) not in present]
    # The MLflow that packaging loaded and checked the model with, not the one that logged it: the image's lock and
    # this process's MLflow were resolved together, while an older logger's (a job cluster's MLflow 3.8.1) requires
    # packages below what the lock pins (importlib-metadata<9, packaging<26): its pin could never install beside it.
    skinny = f"mlflow-skinny=={mlflow.__version__}"
    extras = [skinny, *(pin for pin in model_pins if _package_name(pin) not in ("mlflow", "mlflow-skinny"))]
    return locked, [pin for pin in dict.fromkeys(extras) if _package_name(pin) not in present]


def _model_requirements(mlflow_dir: Path) -> list[str]:
    """The model's requirements.txt, requirement lines only (no options, comments or includes)."""
    path = mlflow_dir / "requirements.txt"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [line.split("#")[0].strip() for line in lines
            if line.split("#")[0].strip() and not line.strip().startswith(("-", "#"))]


def _render(runtime: str, locked: list[str], extras: list[str], hashed: bool = True) -> str:
    text = f"# generated by serving.context for the {runtime} runtime from serving/requirements.txt (hash-locked)\n"
    text += "\n".join(locked) + "\n"
    if extras:
        text += (f"# The {runtime} runtime's packages, at the model's pins: not in the lock, so hashed when their wheels "
                 "were\n# downloaded for this context (the image build still installs them with --require-hashes).\n"
                 if hashed else f"# The {runtime} runtime's packages, at the model's pins (no wheelhouse: not hashed, "
                 "a local run only).\n")
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
    parser.add_argument("model_uri", help=URI_FORMS)
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
