"""Product: the Pulumi program (with __main__.py and Pulumi.*.yaml) that declares each stack on Azure and Databricks.

Where each part runs: one Pulumi component per Azure concern (settings, observability, registry,
Databricks, image, Container Apps, AKS, promotion). The mocked cloud that evaluates the program without one, and
the checks of what the platform refuses, are test tooling (testing/).

Owns: everything the Pulumi program declares. May import: serving (serving.context assembles the image's build
context; promotion hashes a model the same way) and training.code alone (the import walk the jobs' wheel shares
with each model version's code; standard library only), the model's contract (training.contract) and, for the quality
loop, monitoring.delta_table and monitoring.granularity: the inference table the stack declares and the rows the
quality job writes into it are one definition, so they cannot disagree. The jobs' code is otherwise packaged by name
(infra/jobwheel.py), never imported.
"""

# Import order matters for speed. Packaging loads the registered model with skops, and importing
# skops.io scans every loaded module once (getattr on each, to name numpy/scipy ufuncs).
# pulumi_azure_native registers ~300 lazily loaded submodules, and each one loads itself when
# scanned: importing skops after azure-native costs ~20 s instead of ~2 s. So skops comes first.
import skops.io  # noqa: F401

MAY_IMPORT: tuple[str, ...] = ("serving", "training", "monitoring")
