"""The Databricks jobs' code as one wheel, which python_wheel_task entry points run.

What goes in is found, not listed: the modules of the entry points below and every first-party module
they import (at any depth, including imports inside functions), with their packages' `__init__.py`.
So a module that training/ or monitoring/ starts to import is packaged by the next build, and one that
cannot be found fails the build (and the tests) here instead of a cluster at 3 a.m. The one exception is the
model's module (models/<name>.py): train and gate import it by name at run time (`--model-module`), which no
import statement shows, so it is added by name, and its own imports are found like the others'.

The distribution is the project's (`<name with _>_jobs`, infra/naming.py), so two projects' wheels never meet in
one workspace; the entry points are generic (mlops-train, mlops-gate, mlops-drift, mlops-batch,
mlops-quality).

The build is deterministic (fixed timestamps, sorted entries): the same code gives the same bytes and
the same file name, so an unchanged wheel is no diff for Pulumi, and a changed one gets a new name
(its version, 1.0.0.dev<n>, carries a hash of the code, the pins and the metadata), which keeps a cluster from reusing a cached
older wheel: renamed entry points with unchanged code make a new name too.

This module imports no Pulumi package: the local job run (tests/databricks) builds with it too.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from training import code

ROOT = Path(__file__).resolve().parent.parent
BASE_VERSION = "1.0.0"
ENTRY_POINTS = {
    "mlops-train": "training.train:cli",
    "mlops-gate": "training.gate:cli",
    "mlops-drift": "monitoring.drift:cli",
    "mlops-batch": "serving.batch:cli",
    "mlops-quality": "monitoring.quality_delta:cli",
}
FIRST_PARTY = code.FIRST_PARTY
# Installed with the wheel (its Requires-Dist) because the runtime does not bundle them; everything else
# the code imports (mlflow, scikit-learn, numpy, pandas, scipy, matplotlib, pyspark, joblib, joblibspark, azure-identity)
# is the runtime's own, and infra/runtime.py checks that neither these pins nor anything they depend on replaces it.
# The batch job compiles and runs the image's ONNX model (skl2onnx, onnx, onnxruntime; onnxmltools for an XGBoost or
# LightGBM model, which the runtime bundles, as packaging compiles it: without it the job fell back to pyfunc where the
# image runs onnx, audit s11 F6); prettytable is skops's, pinned to a version that takes the runtime's wcwidth.
REQUIRES = ("skops", "prettytable", "azure-monitor-query", "skl2onnx", "onnx", "onnxruntime", "onnxmltools")
REQUIREMENTS = ROOT / "requirements.txt"
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Wheel:
    path: Path
    modules: tuple[str, ...]
    distribution: str  # what a python_wheel_task names as its package_name

    @property
    def name(self) -> str:
        return self.path.name


def pins(names: tuple[str, ...], requirements: Path = REQUIREMENTS) -> list[str]:
    """`name==version` from requirements.txt for each name; a name it does not pin is an error."""
    lines = (line.split("#", 1)[0].strip() for line in requirements.read_text().splitlines())
    found = {line.split("==")[0].strip().lower(): line for line in lines if "==" in line}
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(f"{requirements} pins none of {missing}: the Databricks jobs install exactly these")
    return [found[name] for name in names]


def module_file(name: str, root: Path = ROOT) -> Path | None:
    return code.module_file(name, root)


def first_party_imports(path: Path, root: Path = ROOT, *, relative: bool = False) -> set[str]:
    return code.first_party_imports(path, root, relative=relative)


def modules(entry_points: dict[str, str] = ENTRY_POINTS, root: Path = ROOT,
            imported_by_name: tuple[str, ...] = ()) -> dict[str, Path]:
    """Module name -> file: the entry points' modules, the modules the tasks import by name at run time
    (`imported_by_name`: the model's module), what they import, and their parent packages."""
    starts = [*(target.split(":")[0] for target in entry_points.values()), *imported_by_name]
    missing = [name for name in starts if module_file(name, root) is None]
    if missing:
        what = "the model's module" if missing[0] in imported_by_name else "entry point module"
        raise ImportError(f"{what} {missing[0]} is not a module of this project")
    return code.closure(starts, lambda name: module_file(name, root), root)


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _metadata(distribution: str, version: str, model_module: str) -> dict[str, bytes]:
    requires = "".join(f"Requires-Dist: {pin}\n" for pin in pins(REQUIRES))
    entry_points = "[console_scripts]\n" + "".join(f"{name} = {target}\n" for name, target in ENTRY_POINTS.items())
    return {
        "METADATA": (f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n"
                     f"Summary: training, gate, drift and batch scoring jobs of {model_module}\n"
                     f"Requires-Python: >=3.11\n{requires}").encode(),
        "WHEEL": b"Wheel-Version: 1.0\nGenerator: infra.jobwheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "entry_points.txt": entry_points.encode(),
    }


def build(out_dir: Path, distribution: str, model_module: str, root: Path = ROOT) -> Wheel:
    """Write the wheel of `distribution` (the project's, infra/naming.py), holding the jobs' code and the model's
    module, into `out_dir` and return it."""
    found = modules(root=root, imported_by_name=(model_module,))
    files = {path.relative_to(root).as_posix(): path.read_bytes() for path in found.values()}
    digest = hashlib.sha256()
    for relative, data in sorted(files.items()):
        digest.update(relative.encode() + b"\0" + data + b"\0")
    digest.update("".join(pins(REQUIRES)).encode())
    # The metadata too: the same code under other entry points or another name is another wheel for a cluster.
    digest.update("\0".join([distribution, model_module, *(f"{k}={v}" for k, v in sorted(ENTRY_POINTS.items()))]).encode())
    # The content hash as a dev release number, not a local version label (`+<hash>`): a Unity Catalog volume's Files
    # API reads a `+` in a file name as a space (pulumi/pulumi-databricks#589, terraform-provider-databricks#4039), so
    # the file a job names would not be the file uploaded.
    version = f"{BASE_VERSION}.dev{int(digest.hexdigest()[:12], 16)}"
    dist_info = f"{distribution}-{version}.dist-info"
    files.update({f"{dist_info}/{name}": data for name, data in _metadata(distribution, version, model_module).items()})
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in sorted(files.items()))
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(files.items()):
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{distribution}-{version}-py3-none-any.whl"
    partial = path.with_name(f".{path.name}.{os.getpid()}")  # whole or absent: two programs may build the same wheel
    partial.write_bytes(buffer.getvalue())
    partial.replace(path)
    return Wheel(path, tuple(found), distribution)
