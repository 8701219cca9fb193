"""Tooling (not shipped): the cloud stood in for on this machine (mockcloud) and the platform rules.

Test tooling: the cloud, stood in for on this machine. Nothing `pulumi up` runs imports it.

- mockcloud: the Pulumi program evaluated for one stack with Azure's and Databricks' APIs replaced by Pulumi's
  mocks (config validation, model resolution and the build context run for real);
- platform_rules: what Azure and Databricks refuse or do differently, one rule each with its documentation,
  checked against what mockcloud captured.

Used by the tests, `make plan` (the plan and the rules' results) and `make databricks-test` (the declared jobs).
May import: infra (the program it evaluates).
"""

MAY_IMPORT: tuple[str, ...] = ("infra",)
