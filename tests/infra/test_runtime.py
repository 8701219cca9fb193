"""The job clusters' runtime: the jobs install nothing that replaces a library the runtime bundles."""

from __future__ import annotations

import pytest

from infra import jobwheel, runtime, settings, stack_files
from tests.infra.test_settings import load


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_each_stack_runtime_takes_the_jobs_requirements_without_conflict(stack):
    spark_version = load(stack).databricks.job.spark_version
    assert spark_version in runtime.BUNDLED
    assert runtime.conflicts(jobwheel.pins(jobwheel.REQUIRES), spark_version) == []


def test_a_pin_of_a_bundled_library_conflicts():
    found = runtime.conflicts(["mlflow==3.17.2"], "18.0.x-cpu-ml-scala2.13", installed=lambda name: [])
    assert found == ["mlflow==3.17.2 replaces the runtime's mlflow==3.8.1"]


def test_a_requirement_whose_dependencies_exclude_the_bundled_version_conflicts():
    requires = {"some-plugin": ["mlflow>=3.10", "requests", "pytest; extra == 'test'"]}
    found = runtime.conflicts(["some-plugin==1.0"], "18.0.x-cpu-ml-scala2.13", installed=requires.get)
    assert found == ["some-plugin==1.0 needs mlflow>=3.10, the runtime bundles mlflow==3.8.1"]
    assert runtime.conflicts(["some-plugin==1.0"], "17.3.x-cpu-ml-scala2.13", installed={"some-plugin": ["mlflow<3.1"]}.get) == []


def test_a_runtime_without_recorded_versions_is_a_config_error_naming_the_key():
    with pytest.raises(settings.ConfigError, match=r"mlops:databricks\.sparkVersion .*18\.0\.x-cpu-ml"):
        load("dev", {"databricks.sparkVersion": "13.3.x-cpu-ml-scala2.12"})
    assert stack_files.stack_values("dev")["databricks"].get("sparkVersion") is None  # the default: runtime.DEFAULT
    assert load("dev").databricks.job.spark_version == runtime.DEFAULT


def test_the_local_job_run_uses_the_default_runtimes_mlflow_and_spark_and_the_wheels_requirements():
    """requirements-runtime.txt (the job cluster's stand-in, make databricks-test) pins what infra/runtime.py records
    for the default runtime, and installs the wheel's Requires-Dist at exactly the pins the wheel declares."""
    lines = (line.split("#", 1)[0].strip() for line in (jobwheel.ROOT / "requirements-runtime.txt").read_text().splitlines())
    pinned = dict(line.split("==", 1) for line in lines if line)
    assert {name: pinned.get(name) for name in runtime.BUNDLED[runtime.DEFAULT]} == runtime.BUNDLED[runtime.DEFAULT]
    wheel_requires = dict(pin.split("==", 1) for pin in jobwheel.pins(jobwheel.REQUIRES))
    assert {name: pinned.get(name) for name in wheel_requires} == wheel_requires
