"""Product: the training, search and gate jobs, run on Databricks (from the jobs' wheel) and on a laptop.

Training side of the data path, around a model module (models/<name>.py, which declares what the model is:
training/contract.py): load and validate its table, search, evaluate, log the MLflow run, register, gate, and the
drift baseline every version carries.

Everything here runs unchanged as a Databricks job task (from the jobs' wheel) and on a laptop.
Owns: how any model is made and judged. May import: nothing else of ours (the model module is imported by name,
at run time, by training.contract.load).
"""

MAY_IMPORT: tuple[str, ...] = ()
