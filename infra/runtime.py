"""The Databricks Runtime ML the job clusters run, and the library versions it bundles.

A Databricks Runtime ML bundles its own mlflow (and numpy, pandas, scikit-learn, ...). Installing other
versions on top replaces them underneath compiled libraries and the runtime's own integrations, so the
jobs install only what the runtime lacks (infra.jobwheel.REQUIRES, the wheel's Requires-Dist), and
`conflicts` names any job requirement that would replace a bundled library.

BUNDLED holds, per runtime, only versions read from Databricks' documentation (the MLflow-Databricks
Runtime compatibility matrix and the supported-releases table, https://docs.databricks.com/aws/en/release-notes/runtime/ ).
A runtime's numpy/pandas/scikit-learn versions are in its "Python libraries" release-notes table, which was
not reachable when this was written: add them from there before relying on them (a package missing here is
not checked). The local job run (requirements-runtime.txt, make databricks-test) runs the jobs on the
default runtime's MLflow and Spark, so code that needs a newer MLflow fails there, not on a cluster.
"""

from __future__ import annotations

import re
from importlib import metadata

from packaging.requirements import Requirement
from packaging.version import Version

RELEASE_NOTES = "https://docs.databricks.com/aws/en/release-notes/runtime/"
DEFAULT = "18.0.x-cpu-ml-scala2.13"  # 18 LTS ML (Apache Spark 4.1): the newest LTS, MLflow 3.8.1
BUNDLED: dict[str, dict[str, str]] = {
    # MLflow: the MLflow-Databricks Runtime compatibility matrix; pyspark: the runtime's Apache Spark version (the
    # supported-releases table). A job requirement naming either would replace the runtime's own.
    "18.0.x-cpu-ml-scala2.13": {"mlflow": "3.8.1", "pyspark": "4.1.0"},
    "17.3.x-cpu-ml-scala2.13": {"mlflow": "3.0.1", "pyspark": "4.0.0"},
    "16.4.x-cpu-ml-scala2.12": {"mlflow": "2.21.3", "pyspark": "3.5.2"},
    "15.4.x-cpu-ml-scala2.12": {"mlflow": "2.13.1", "pyspark": "3.5.0"},
}


def bundled(spark_version: str) -> dict[str, str]:
    if spark_version not in BUNDLED:
        raise KeyError(f"no bundled-library versions recorded for runtime {spark_version}; known: {', '.join(BUNDLED)} "
                       f"(add it to infra/runtime.py from {RELEASE_NOTES})")
    return BUNDLED[spark_version]


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def conflicts(requirements: list[str], spark_version: str, installed=metadata.requires) -> list[str]:
    """What installing `requirements` (name==version pins) on the runtime would change underneath it: a pin of
    a bundled library, or a pinned package whose own dependencies exclude the bundled version."""
    runtime = bundled(spark_version)
    found = [f"{r} replaces the runtime's {_name(r)}=={runtime[_name(r)]}" for r in requirements if _name(r) in runtime]
    for requirement in requirements:
        for dependency in installed(Requirement(requirement).name) or []:
            needed = Requirement(dependency)
            if needed.marker is not None and not needed.marker.evaluate({"extra": ""}):
                continue
            have = runtime.get(_name(dependency))
            if have and not needed.specifier.contains(Version(have), prereleases=True):
                found.append(f"{requirement} needs {needed}, the runtime bundles {_name(dependency)}=={have}")
    return found
