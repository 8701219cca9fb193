"""Prometheus metrics. With several uvicorn workers, prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by scoring.serve) aggregates them across workers."""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

ROUTES = {"/predict", "/health", "/ready", "/metrics", "/docs", "/openapi.json"}

REQUESTS = Counter("scoring_http_requests", "HTTP requests by route, method and status",
                   ["route", "method", "status"])
LATENCY = Histogram("scoring_http_request_duration_seconds", "Request latency by route", ["route"],
                    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
PROBABILITY = Histogram("scoring_predicted_probability", "Predicted probability of default",
                        ["model_name", "model_version"], buckets=tuple(i / 10 for i in range(1, 11)))
RECORDS = Counter("scoring_records", "Records scored", ["model_name", "model_version"])
MODEL_INFO = Gauge("scoring_model_info", "The model this process serves (value 1)",
                   ["model_name", "model_version", "runtime"], multiprocess_mode="max")


def route_label(path: str) -> str:
    """Known routes by name, everything else as one label: scanners must not explode cardinality."""
    return path if path in ROUTES else "other"


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
