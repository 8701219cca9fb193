"""Tooling (not shipped): the benchmarks (`make bench`, `make bench-spark`) and the Performance page.

`make bench`: the serving benchmark and its report; `make bench-spark`: batch scoring and the search on local
Spark (spark.py). May import: serving (what is measured), training (the local registry it trains its model
into; the search the Spark benchmark times) and infra (the dev stack's model, which they measure by default).
"""

MAY_IMPORT: tuple[str, ...] = ("serving", "training", "infra")
