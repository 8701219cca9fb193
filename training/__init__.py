"""Training side of the data path: data contract, pipeline, MLflow run, gate, drift baseline.

Everything here runs unchanged as a Databricks job task (from the jobs' wheel) and on a laptop.
Owns: what a model is made of and how one is judged. May import: nothing else of ours.
"""

MAY_IMPORT: tuple[str, ...] = ()
