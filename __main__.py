"""The Pulumi program's table of contents: read the stack's settings, declare the components,
export the outputs CI and promotion use.

The Azure, Databricks and serving components are declared by infra/ (next milestone); today the
program only reads and exports which registered model the stack serves.
"""

import pulumi

config = pulumi.Config()
pulumi.export("environment", config.require("environment"))
pulumi.export("model_uri", f"models:/{config.require('modelName')}@{config.get('modelAlias') or 'champion'}")
