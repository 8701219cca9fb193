"""The Spark benchmark's report and chart (bench/spark.py) from a results record: targets judged, chart written."""

from __future__ import annotations

from bench import spark as bench


def results(speedup_rows_per_second: float, difference: float) -> dict:
    medians = {"onnx_mapInArrow": 100000 / speedup_rows_per_second, "mlflow_spark_udf": 100.0, bench.NO_MODEL: 20.0}
    batch = {"100000": {"rows_per_second": {"onnx_mapInArrow": speedup_rows_per_second, "mlflow_spark_udf": 1000.0},
                        "median_seconds": medians, "speedup": speedup_rows_per_second / 1000.0,
                        **bench.bounds(medians, {bench.NO_MODEL: [30.0, 20.0, 40.0]}, trees_cpu=20.0)},
             "max_abs_probability_difference": difference}
    search = {"20000": {"median_seconds": {"sequential": 10.0, "spark_tasks": 6.0}, "speedup": 10 / 6, "same_choice": True}}
    load = {"samples": 3, "load1_min": 1.0, "load1_median": 1.5, "load1_max": 2.5, "cores": 2}
    return {"batch": batch, "search": search, "load": load}


def test_the_report_judges_the_targets_and_states_the_load():
    good = bench.report(results(4000.0, 2e-7))
    # The bounds: spark_udf's 100 s over the no-model query's 20 s (5.0×), and over its median 30 CPU s plus the
    # trees' 20 spread over 2 cores (25 s: 4.0×).
    assert "| 100,000 | 4,000 | 1,000 | 4.0× PASS | 20.00 s | 5.0× | 4.0× (trees 20.0 CPU s) |" in good
    assert "max |dp| 2.00e-07 (PASS" in good
    assert "median 1.50 (min 1.00, max 2.50, 3 samples)" in good
    assert "| 20,000 | 10.0 | 6.0 | 1.67× | True |" in good
    bad = bench.report(results(2000.0, 3e-5))
    assert "2.0× FAIL" in bad and "(FAIL, tolerance 1e-05)" in bad


def test_the_chart_is_written(tmp_path):
    out = tmp_path / "chart.png"
    bench.chart(results(4000.0, 2e-7), out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
