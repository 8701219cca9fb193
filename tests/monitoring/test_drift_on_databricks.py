"""The drift job's Databricks-only calls: the service credential's API, chosen by where the code runs.

learn.microsoft.com/azure/databricks/connect/unity-catalog/cloud-services/use-service-credentials: in UDFs,
`databricks.service_credentials.getServiceCredentialsProvider()`; that "differs from the
`dbutils.credentials.getServiceCredentialsProvider()` function used in notebooks, which isn't available in the UDF
execution context". The module works only where a Spark TaskContext exists (an executor), as code that handles both
says (the Databricks audit's N4). The stand-ins below behave so: each API fails where the other one is the one to use.
"""

from __future__ import annotations

import sys
import types

import pytest

from monitoring import drift, drift_sources


class Provider:
    """What either API returns: an Azure TokenCredential for the named service credential."""

    def __init__(self, api: str, name: str) -> None:
        self.api, self.name = api, name


class TaskContext:
    """pyspark.TaskContext: get() is the running task's context inside a Spark task, None on the driver."""
    current: object | None = None

    @classmethod
    def get(cls) -> object | None:
        return cls.current


def udf_api(name: str) -> Provider:
    if TaskContext.get() is None:
        raise RuntimeError("databricks.service_credentials works in a UDF only (no TaskContext on the driver)")
    return Provider("databricks.service_credentials", name)


class DBUtils:
    """pyspark.dbutils.DBUtils(spark): the driver's dbutils, which a wheel task has no global for."""

    def __init__(self, spark: object) -> None:
        assert spark == "spark session"
        self.credentials = types.SimpleNamespace(getServiceCredentialsProvider=self._provider)

    @staticmethod
    def _provider(name: str) -> Provider:
        if TaskContext.get() is not None:
            raise RuntimeError("dbutils isn't available in the UDF execution context")
        return Provider("dbutils.credentials", name)


@pytest.fixture
def runtime(monkeypatch):
    """The Databricks Runtime's modules (not installed here: open-source pyspark has no dbutils)."""
    builder = types.SimpleNamespace(getOrCreate=lambda: "spark session")
    modules = {"pyspark": types.SimpleNamespace(TaskContext=TaskContext),
               "pyspark.sql": types.SimpleNamespace(SparkSession=types.SimpleNamespace(builder=builder)),
               "pyspark.dbutils": types.SimpleNamespace(DBUtils=DBUtils),
               "databricks.service_credentials": types.SimpleNamespace(getServiceCredentialsProvider=udf_api)}
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(TaskContext, "current", None)
    return TaskContext


def test_on_the_driver_the_service_credential_comes_from_dbutils(runtime):
    provider = drift.job_credential("mlops-logs-prod")
    assert (provider.api, provider.name) == ("dbutils.credentials", "mlops-logs-prod")


def test_inside_a_spark_task_it_comes_from_the_udf_module(runtime, monkeypatch):
    monkeypatch.setattr(runtime, "current", object())
    provider = drift_sources.service_credentials_provider("mlops-logs-prod")
    assert (provider.api, provider.name) == ("databricks.service_credentials", "mlops-logs-prod")
