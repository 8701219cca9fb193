"""The type checker (make typecheck: mypy with pyproject.toml's [tool.mypy]) catches a wrong argument type between
our modules, in a function without annotations too (check_untyped_defs). Runs mypy on one small file that imports
one module; its incremental cache (.mypy_cache, warm after make typecheck) keeps this well under a second."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# infra.kql.predictions takes a LogSource (from kql.container_apps or kql.aks), not a table name.
CALLER = textwrap.dedent('''\
    from infra import kql


    def queries(app_name):  # no annotations: its body is checked all the same
        source = kql.container_apps(app_name)
        return kql.predictions(source), kql.predictions("ContainerAppConsoleLogs_CL")
    ''')


def test_mypy_catches_a_wrong_argument_type_between_our_modules(tmp_path):
    caller = tmp_path / "caller.py"
    caller.write_text(CALLER)
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(caller)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    # After the file's path: mypy's cache may replay its errors for an unchanged `caller` under an earlier tmp path.
    errors = [line.rpartition("caller.py:")[2] for line in done.stdout.splitlines() if ": error:" in line]
    assert done.returncode == 1, done.stdout + done.stderr
    # Exactly the wrong call: the import resolved to our module and the right call passed.
    assert errors == ['6: error: Argument 1 to "predictions" has incompatible type "str"; expected "LogSource"  [arg-type]'], \
        done.stdout


# The providers' services the program uses stay checked though pyproject.toml skips the others: a misspelt argument of
# an azure-native resource and of a Kubernetes object is an error (the right ones pass).
PROVIDER_CALLER = textwrap.dedent('''\
    import pulumi_azure_native.operationalinsights as operationalinsights
    import pulumi_kubernetes as k8s


    def resources():
        operationalinsights.Workspace("w", resource_group_name="rg")
        operationalinsights.Workspace("w", resource_group_nam="rg")
        k8s.core.v1.Namespace("n", metadata={"name": "scoring"})
        k8s.core.v1.Namespace("n", metadat={"name": "scoring"})
    ''')


def test_mypy_checks_the_arguments_of_the_provider_services_the_program_uses(tmp_path):
    caller = tmp_path / "caller.py"
    caller.write_text(PROVIDER_CALLER)
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(caller)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = {int(line.rpartition("caller.py:")[2].split(":")[0]) for line in done.stdout.splitlines() if ": error:" in line}
    assert done.returncode == 1 and lines == {7, 9}, done.stdout + done.stderr
