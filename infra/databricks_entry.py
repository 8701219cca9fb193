"""Entry file of the Databricks job tasks, uploaded next to the training/ package.

A spark_python_task runs a file, not `python -m <module>`; this file runs the module named by its
first parameter as `__main__`, with the upload root on sys.path so `training` imports as a package.
Databricks injects `dbutils` into this file's globals: it is handed on, so training.train can set
task values for the gate task.

    run_module.py training.train --data ... --skip-gate
"""

import os
import runpy
import sys

if __name__ == "__main__":
    root = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, root)
    module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True,
                     init_globals={"dbutils": globals().get("dbutils")})
