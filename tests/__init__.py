"""Tooling (not shipped): the tests, one folder per package they test (training/, serving/, infra/, monitoring/,
databricks/ for the declared jobs on local Spark, container/ for the real image). Test tooling shared with `make plan`
and `make databricks-test` (the mocked cloud, the platform rules) lives in testing/."""
