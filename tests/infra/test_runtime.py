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
    found = runtime.conflicts(["mlflow==3.17.2"], runtime.DEFAULT, installed=lambda name: [])
    assert found == ["mlflow==3.17.2 replaces the runtime's mlflow==3.8.1"]


def test_a_requirement_whose_dependencies_exclude_the_bundled_version_conflicts():
    requires = {"some-plugin": ["mlflow>=3.10", "requests", "pytest; extra == 'test'"]}
    found = runtime.conflicts(["some-plugin==1.0"], runtime.DEFAULT, installed=requires.get)
    assert found == ["some-plugin==1.0 needs mlflow>=3.10, the runtime bundles mlflow==3.8.1"]
    assert runtime.conflicts(["some-plugin==1.0"], "17.3.x-cpu-ml-scala2.13", installed={"some-plugin": ["mlflow<3.1"]}.get) == []


def test_a_dependencys_markers_are_those_of_the_runtimes_python():
    """Audit s12 F7: DBR 18 ML runs Python 3.12 on x86-64 Linux, whatever runs `up` (3.11, a Mac, an arm64 laptop): a
    requirement only for 3.12 counts there, one only for older Pythons, macOS or arm64 does not."""
    assert runtime.PYTHON[runtime.DEFAULT].startswith("3.12.") and set(runtime.PYTHON) == set(runtime.BUNDLED)
    requires = {"some-plugin": ['mlflow>=3.10; python_version >= "3.12"', 'pyspark>=4; python_version < "3.12"',
                                'mlflow<3; sys_platform == "darwin"', 'mlflow<2; platform_machine == "arm64"']}
    found = runtime.conflicts(["some-plugin==1.0"], runtime.DEFAULT, installed=requires.get)
    assert found == ['some-plugin==1.0 needs mlflow>=3.10; python_version >= "3.12", the runtime bundles mlflow==3.8.1']
    assert runtime.conflicts(["some-plugin==1.0"], "15.4.x-cpu-ml-scala2.12", installed=requires.get) == [
        'some-plugin==1.0 needs pyspark>=4; python_version < "3.12", the runtime bundles pyspark==3.5.0']


def test_the_default_runtime_records_its_whole_library_table():
    """DBR 18 ML's release-notes table, not only mlflow and pyspark: what the wheel's dependencies meet there."""
    libraries = runtime.bundled(runtime.DEFAULT)
    assert {"opentelemetry-sdk": "1.38.0", "azure-core": "1.36.0", "protobuf": "5.29.4", "typing-extensions": "4.12.2",
            "mlflow": "3.8.1", "pyspark": "4.1.0"}.items() <= libraries.items()
    assert len(libraries) > 300


def test_a_dependency_of_a_dependency_that_excludes_the_bundled_version_conflicts():
    """The wheel's pins bring their own dependencies, which pip installs too: a constraint two levels down (skops ->
    prettytable -> wcwidth) upgrades a runtime library as surely as a pin would."""
    requires = {"skops": ["prettytable>=3.9", "scikit-learn>=1.2"], "prettytable": ["wcwidth>=0.3.5"]}
    found = runtime.conflicts(["skops==0.16.0"], runtime.DEFAULT, installed=requires.get)
    assert found == ["skops==0.16.0 needs wcwidth>=0.3.5 (through prettytable), the runtime bundles wcwidth==0.2.5"]
    requires["prettytable"] = ["wcwidth"]
    assert runtime.conflicts(["skops==0.16.0"], runtime.DEFAULT, installed=requires.get) == []


def test_the_exporter_the_audit_found_conflicts_with_the_runtime():
    """azure-monitor-opentelemetry-exporter 1.0.0b58 (the pin before) needs OpenTelemetry 1.45 and azure-core 1.38:
    installed on DBR 18 ML it upgrades both underneath MLflow's tracing."""
    requires = {"azure-monitor-opentelemetry-exporter": ["azure-core<2.0.0,>=1.38.0", "opentelemetry-sdk~=1.45.0"]}
    found = runtime.conflicts(["azure-monitor-opentelemetry-exporter==1.0.0b58"], runtime.DEFAULT, installed=requires.get)
    assert [line.split(" needs ")[1].split(",")[0] for line in found] == ["azure-core<2.0.0", "opentelemetry-sdk~=1.45.0"]


def test_a_pinned_package_installed_at_another_version_cannot_be_checked():
    requires = runtime.installed_requires({"pytest": "0.0.1"})
    with pytest.raises(RuntimeError, match=r"pytest .* is installed, requirements\.txt pins 0\.0\.1"):
        requires("pytest")


def test_a_runtime_without_recorded_versions_is_a_config_error_naming_the_key():
    with pytest.raises(settings.ConfigError, match=r"mlops:databricks\.sparkVersion .*18\.x-cpu-ml"):
        load("dev", {"databricks.sparkVersion": "13.3.x-cpu-ml-scala2.12"})
    assert stack_files.stack_values("dev")["databricks"].get("sparkVersion") is None  # the default: runtime.DEFAULT
    assert load("dev").databricks.job.spark_version == runtime.DEFAULT


def test_the_local_job_run_uses_the_default_runtimes_mlflow_and_spark_and_the_wheels_requirements():
    """requirements-runtime.txt (the job cluster's stand-in, make databricks-test) pins what infra/runtime.py records
    for the default runtime, and installs the wheel's Requires-Dist at exactly the pins the wheel declares."""
    lines = (line.split("#", 1)[0].strip() for line in (jobwheel.ROOT / "requirements-runtime.txt").read_text().splitlines())
    pinned = dict(line.split("==", 1) for line in lines if line)
    documented = {name: runtime.BUNDLED[runtime.DEFAULT][name] for name in ("mlflow", "pyspark", "azure-identity",
                                                                         "joblibspark")}
    assert {name: pinned.get(name) for name in documented} == documented  # the runtime's own, which the jobs import
    wheel_requires = dict(pin.split("==", 1) for pin in jobwheel.pins(jobwheel.REQUIRES))
    assert {name: pinned.get(name) for name in wheel_requires} == wheel_requires
