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
