"""Product: the drift and model-quality jobs and their reports.

Watching the model in production: the drift job and the local traffic generator.

Owns: the drift statistics and report, the synthetic traffic. May import: training (the data contract and the
drift baseline's bins, so serving-time records are binned as the baseline was) and infra (infra.kql: the drift
job reads the request log with the same KQL the alerts use) and serving (serving/inference_table.py: the inference
table's append statement and pseudonym, which the batch job writes with too).
"""

MAY_IMPORT: tuple[str, ...] = ("training", "infra", "serving")
