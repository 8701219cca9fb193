"""Smoke test of a running scoring service: the same program locally, in CI and against staging.

    python -m serving.smoke http://127.0.0.1:8000 [--example model/manifest.json] [--expect-version 3]

Checks /health, /ready (waiting up to --wait seconds), /predict with the model's input example
(taken from the service's own OpenAPI schema unless a manifest is given), and one bad request
that must get a 4xx naming the field. Exits non-zero naming the first check that failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class SmokeFailure(AssertionError):
    pass


@dataclass
class Reply:
    status: int
    body: dict | list | str


def call(url: str, method: str = "GET", payload: object | None = None, timeout: float = 10.0) -> Reply:
    data = json.dumps(payload).encode() if payload is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return Reply(status, json.loads(raw))
    except ValueError:
        return Reply(status, raw.decode(errors="replace"))


def wait_for(base: str, route: str, wait: float) -> Reply:
    """Poll until `route` answers 200: a service that is starting refuses connections at first."""
    deadline, last = time.monotonic() + wait, None
    while True:
        try:
            last = call(f"{base}{route}", timeout=2)
            if last.status == 200:
                return last
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            last = Reply(0, str(getattr(error, "reason", error)))
        if time.monotonic() >= deadline:
            raise SmokeFailure(f"{route}: no 200 after {wait:.0f}s (last answer {last.status}: {last.body})")
        time.sleep(0.2)


def example_records(base: str, manifest: Path | None) -> list[dict]:
    if manifest is not None:
        return json.loads(manifest.read_text())["input_example"]
    schema = call(f"{base}/openapi.json")
    if schema.status != 200:
        raise SmokeFailure(f"/openapi.json: expected 200, got {schema.status}")
    try:
        return schema.body["components"]["schemas"]["PredictRequest"]["examples"][0]["records"]
    except (KeyError, IndexError, TypeError):
        raise SmokeFailure("/openapi.json: PredictRequest has no example to send") from None


def run(base: str, manifest: Path | None = None, expect_version: str | None = None, wait: float = 30.0,
        say=print) -> None:
    base = base.rstrip("/")
    wait_for(base, "/health", wait)
    say("ok   /health")
    ready = wait_for(base, "/ready", wait)
    version = ready.body.get("model", {}).get("version") if isinstance(ready.body, dict) else None
    if expect_version is not None and str(version) != str(expect_version):
        raise SmokeFailure(f"/ready: serving model version {version}, expected {expect_version}")
    say(f"ok   /ready (model version {version})")

    records = example_records(base, manifest)
    scored = call(f"{base}/predict", "POST", {"records": records})
    if scored.status != 200:
        raise SmokeFailure(f"/predict: expected 200 for the input example, got {scored.status}: {scored.body}")
    predictions = scored.body.get("predictions", []) if isinstance(scored.body, dict) else []
    if len(predictions) != len(records) or not all(0.0 <= p.get("probability", -1) <= 1.0 and p.get("label") in (0, 1)
                                                    for p in predictions):
        raise SmokeFailure(f"/predict: expected {len(records)} probabilities in [0, 1] with 0/1 labels, got {scored.body}")
    say(f"ok   /predict ({len(records)} records, probabilities {[round(p['probability'], 4) for p in predictions]})")

    field = next(iter(records[0]))
    bad = {"records": [{**records[0], field: {"not": "a value"}}]}
    rejected = call(f"{base}/predict", "POST", bad)
    named = isinstance(rejected.body, dict) and any(p.get("field") == field for p in rejected.body.get("problems", []))
    if not 400 <= rejected.status < 500 or not named:
        raise SmokeFailure(f"/predict: a bad '{field}' must get a 4xx naming the field, got {rejected.status}: {rejected.body}")
    say(f"ok   /predict rejects a bad '{field}' with {rejected.status}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="base URL of the service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--manifest", type=Path, help="build-context manifest.json whose input example to send")
    parser.add_argument("--expect-version", help="fail unless /ready reports this model version")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for /ready")
    args = parser.parse_args(argv)
    try:
        run(args.url, args.manifest, args.expect_version, args.wait)
    except SmokeFailure as failure:
        print(f"FAIL {failure}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
        print(f"FAIL cannot reach {args.url}: {error}", file=sys.stderr)
        return 1
    print(f"smoke test passed: {args.url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
