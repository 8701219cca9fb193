"""The Pulumi program's table of contents: read the stack's settings (infra/settings.py), declare
the components (observability, registry, Databricks, the scoring image, the serving target) and
export the outputs CI and promotion use. The body lives in infra/program.py so that tests and
`make plan` can evaluate it under mocks, once per stack."""

import pulumi

from infra import program, settings

settings.refuse_placeholders(settings.load())  # a real deployment only: tests and `make plan` show the stack files
for name, value in program.run().items():
    pulumi.export(name, value)
