"""Training side of the data path: data contract, pipeline, MLflow run, gate, drift baseline.

Everything here runs unchanged as a Databricks job task and on a laptop.
"""
