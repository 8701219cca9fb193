"""The Databricks Runtime ML the job clusters run, and the library versions it bundles.

A Databricks Runtime ML bundles its own mlflow (and numpy, pandas, scikit-learn, opentelemetry, azure-core, ...).
Installing other versions on top replaces them underneath compiled libraries and the runtime's own integrations
(MLflow's tracing runs on the runtime's OpenTelemetry), so the jobs install only what the runtime lacks
(infra.jobwheel.REQUIRES, the wheel's Requires-Dist), and `conflicts` names every job requirement, or dependency of
one at any depth, that would replace a bundled library.

BUNDLED holds, per runtime key, the versions read from Databricks' documentation: mlflow from the MLflow-Databricks
Runtime compatibility matrix, pyspark from the supported-releases table (RELEASE_NOTES), and every other Python library
from the runtime's release-notes library table (infra/runtimes/<file>.txt says where it was read).

The runtime key (N10 of the Databricks audit): 18 LTS is a major line with point releases (18.0 was its Beta, out of
support since 2026-06-09); Databricks names the line's ML CPU runtime `18.x-cpu-ml-scala2.13`, the identifier its
environments repository mirrors from the platform (github.com/databricks/environments: "directory names mirror the
identifiers the Databricks platform exposes (spark_version for classic clusters)").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version

RELEASE_NOTES = "https://docs.databricks.com/aws/en/release-notes/runtime/"
TABLES = Path(__file__).resolve().parent / "runtimes"
DEFAULT = "18.x-cpu-ml-scala2.13"  # 18 LTS ML (Apache Spark 4.1, Python 3.12): the newest LTS, MLflow 3.8.1


def _table(name: str) -> dict[str, str]:
    """A runtime's library table (infra/runtimes/<name>.txt, name==version lines)."""
    lines = (line.split("#", 1)[0].strip() for line in (TABLES / name).read_text().splitlines())
    return {_name(pin): pin.split("==", 1)[1] for pin in lines if pin}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


_ML_18 = {**_table("18-cpu-ml.txt"), "mlflow": "3.8.1", "pyspark": "4.1.0"}
BUNDLED: dict[str, dict[str, str]] = {
    # 17.3 and older: only MLflow (the compatibility matrix) and pyspark (the runtime's Apache Spark) are recorded, so
    # a job requirement naming another library those runtimes bundle is not caught there.
    "18.x-cpu-ml-scala2.13": _ML_18,
    "17.3.x-cpu-ml-scala2.13": {"mlflow": "3.0.1", "pyspark": "4.0.0"},
    "16.4.x-cpu-ml-scala2.12": {"mlflow": "2.21.3", "pyspark": "3.5.2"},
    "15.4.x-cpu-ml-scala2.12": {"mlflow": "2.13.1", "pyspark": "3.5.0"},
}
# Each runtime's Python (the release notes' "System environment"): a dependency's markers are evaluated for it, not for
# the Python that runs `up`.
PYTHON = {"18.x-cpu-ml-scala2.13": "3.12.3", "17.3.x-cpu-ml-scala2.13": "3.12.3", "16.4.x-cpu-ml-scala2.12": "3.12.3",
          "15.4.x-cpu-ml-scala2.12": "3.11.0"}
Requires = Callable[[str], "list[str] | None"]  # a distribution's Requires-Dist, as importlib.metadata.requires


def bundled(spark_version: str) -> dict[str, str]:
    if spark_version not in BUNDLED:
        raise KeyError(f"no bundled-library versions recorded for runtime {spark_version}; known: {', '.join(BUNDLED)} "
                       f"(add it to infra/runtime.py from {RELEASE_NOTES})")
    return BUNDLED[spark_version]


def installed_requires(pins: dict[str, str]) -> Requires:
    """The Requires-Dist of what is installed here, refusing a pinned distribution installed at another version: its
    dependencies would be another version's (reinstall requirements.txt)."""
    def requires(name: str) -> list[str] | None:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            return None
        pinned = pins.get(_name(name))
        if pinned is not None and Version(version) != Version(pinned):
            raise RuntimeError(f"{name} {version} is installed, requirements.txt pins {pinned}: its dependencies "
                               "cannot be checked against the runtime (reinstall requirements.txt)")
        return metadata.requires(name)
    return requires


def conflicts(requirements: list[str], spark_version: str, installed: Requires | None = None) -> list[str]:
    """What installing `requirements` (name==version pins) on the runtime would change underneath it: a pin of a
    bundled library, or a requirement at any depth (the pins' dependencies, theirs, ...) that excludes the bundled
    version. `installed` gives a distribution's Requires-Dist (default: this environment's, at the pinned versions)."""
    runtime = bundled(spark_version)
    pins = {_name(r): str(Requirement(r).specifier).removeprefix("==") for r in requirements}
    requires = installed or installed_requires(pins)
    found = [f"{r} replaces the runtime's {_name(r)}=={runtime[_name(r)]}" for r in requirements if _name(r) in runtime]
    python = PYTHON[spark_version]
    environment = {**{k: str(v) for k, v in default_environment().items()}, "extra": "",  # the cluster's, not ours:
                   "python_version": ".".join(python.split(".")[:2]), "python_full_version": python,
                   "implementation_name": "cpython", "implementation_version": python,
                   "platform_python_implementation": "CPython", "os_name": "posix", "sys_platform": "linux",
                   "platform_system": "Linux", "platform_machine": "x86_64"}
    seen: set[str] = set()
    todo = [(r, r) for r in requirements]  # (requirement, the pin that brings it)
    while todo:
        requirement, via = todo.pop()
        name = Requirement(requirement).name
        if _name(name) in seen:
            continue
        seen.add(_name(name))
        for dependency in requires(name) or []:
            needed = Requirement(dependency)
            if needed.marker is not None and not needed.marker.evaluate(environment):
                continue
            have = runtime.get(_name(dependency))
            if have is None:
                todo.append((dependency, via))  # installed with the wheel: its own dependencies count too
            elif not needed.specifier.contains(Version(have), prereleases=True):
                through = "" if _name(via) == _name(name) else f" (through {name})"
                found.append(f"{via} needs {needed}{through}, the runtime bundles {_name(dependency)}=={have}")
    return found
