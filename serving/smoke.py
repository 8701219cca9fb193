"""Smoke test of a running scoring service: the same program locally, in CI and against staging.

    python -m serving.smoke http://127.0.0.1:8000 [--example model/manifest.json] [--expect-version 3]
    python -m serving.smoke https://<app>.azurecontainerapps.io --token-from-azure-cli api://<API client id>

Checks /health, /ready (waiting up to --wait seconds; it names the model's task and classes), /predict with the
model's input example (taken from the service's own OpenAPI schema unless a manifest is given), whose outputs must
be the task's (binary: a probability in [0, 1] and one of the two classes; multiclass: one of the classes and a
probability per class summing to 1; regression: a finite number), and one bad request that must get a 4xx naming
the field. Exits non-zero naming the first check that failed.

Against an endpoint behind Entra authentication every request carries a bearer token: from the
environment variable SMOKE_BEARER_TOKEN (never an argument: arguments show in process lists and
logs), or from the logged-in Azure CLI for the API's audience (--token-from-azure-cli; in CI the
OIDC-logged-in smoke identity). With a token the test also checks that a request without one is
turned away with 401, so a deployment that lost its authentication fails the smoke test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
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


TOKEN_ENV = "SMOKE_BEARER_TOKEN"


def call(url: str, method: str = "GET", payload: object | None = None, timeout: float = 10.0,
         token: str | None = None) -> Reply:
    data = json.dumps(payload).encode() if payload is not None else None
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return Reply(status, json.loads(raw))
    except ValueError:
        return Reply(status, raw.decode(errors="replace"))


def azure_cli_token(audience: str) -> str:
    """An access token for the API's audience from the logged-in Azure CLI (az login, or CI's OIDC login)."""
    try:
        result = subprocess.run(["az", "account", "get-access-token", "--resource", audience, "--query", "accessToken",
                                 "--output", "tsv"], capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise SmokeFailure("--token-from-azure-cli: the Azure CLI (az) is not installed") from None
    if result.returncode != 0 or not result.stdout.strip():
        raise SmokeFailure(f"--token-from-azure-cli: no token for {audience}: {result.stderr.strip()}")
    return result.stdout.strip()


def wait_for(base: str, route: str, wait: float, token: str | None = None) -> Reply:
    """Poll until `route` answers 200: a service that is starting refuses connections at first."""
    deadline, last = time.monotonic() + wait, None
    while True:
        try:
            last = call(f"{base}{route}", timeout=2, token=token)
            if last.status == 200:
                return last
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            last = Reply(0, str(getattr(error, "reason", error)))
        if time.monotonic() >= deadline:
            raise SmokeFailure(f"{route}: no 200 after {wait:.0f}s (last answer {last.status}: {last.body})")
        time.sleep(0.2)


def example_records(base: str, manifest: Path | None, token: str | None = None) -> list[dict]:
    if manifest is not None:
        return json.loads(manifest.read_text())["input_example"]
    schema = call(f"{base}/openapi.json", token=token)
    if schema.status != 200:
        raise SmokeFailure(f"/openapi.json: expected 200, got {schema.status}")
    body = schema.body if isinstance(schema.body, dict) else {}
    try:
        return body["components"]["schemas"]["PredictRequest"]["examples"][0]["records"]
    except (KeyError, IndexError, TypeError):
        raise SmokeFailure("/openapi.json: PredictRequest has no example to send") from None


def run(base: str, manifest: Path | None = None, expect_version: str | None = None, wait: float = 30.0,
        say=print, token: str | None = None, expect_personal: str | None = None, unreported_ok: bool = False) -> None:
    base = base.rstrip("/")
    wait_for(base, "/health", wait, token)
    say("ok   /health")
    ready = wait_for(base, "/ready", wait, token)
    version = ready.body.get("model", {}).get("version") if isinstance(ready.body, dict) else None
    if expect_version is not None and str(version) != str(expect_version):
        raise SmokeFailure(f"/ready: serving model version {version}, expected {expect_version}")
    say(f"ok   /ready (model version {version})")
    check_personal(ready.body if isinstance(ready.body, dict) else {}, expect_personal, say, unreported_ok)

    records = example_records(base, manifest, token)
    scored = call(f"{base}/predict", "POST", {"records": records}, token=token)
    if scored.status != 200:
        raise SmokeFailure(f"/predict: expected 200 for the input example, got {scored.status}: {scored.body}")
    predictions = scored.body.get("predictions", []) if isinstance(scored.body, dict) else []
    body = ready.body if isinstance(ready.body, dict) else {}
    task, classes = body.get("task", "binary"), body.get("classes") or [0, 1]  # a service that predates the task
    wrong = [p for p in predictions if problem(p, task, classes)]
    if len(predictions) != len(records) or wrong:
        raise SmokeFailure(f"/predict: expected {len(records)} {task} predictions, got {scored.body}"
                           + (f" ({problem(wrong[0], task, classes)})" if wrong else ""))
    say(f"ok   /predict ({len(records)} records, {task}: {[summary(p, task) for p in predictions]})")

    field = next(iter(records[0]))
    bad = {"records": [{**records[0], field: {"not": "a value"}}]}
    rejected = call(f"{base}/predict", "POST", bad, token=token)
    named = isinstance(rejected.body, dict) and any(p.get("field") == field for p in rejected.body.get("problems", []))
    if not 400 <= rejected.status < 500 or not named:
        raise SmokeFailure(f"/predict: a bad '{field}' must get a 4xx naming the field, got {rejected.status}: {rejected.body}")
    say(f"ok   /predict rejects a bad '{field}' with {rejected.status}")
    if token:
        check_anonymous_refused(base, records, say)


def check_personal(ready: dict, expected: str | None, say=print, unreported_ok: bool = False) -> None:
    """The request log keeps of the personal columns what the stack says (observability.requestLogPersonal). An image
    that does not report it is older than this check: those built before the setting log the columns whole, those
    after it honour it but cannot say so. Refused unless the stack keeps them (or the release was told the pinned
    image was checked: promotion.pinnedPersonalChecked, scripts/smoke_from.py, which passes `unreported_ok`; a mode
    the image does report must still be the stack's)."""
    if expected is None or expected == "keep":
        return
    found = ready.get("request_log_personal")
    if found is None and unreported_ok:
        say("ok   /ready (request log personal columns: not reported; the pinned image was checked)")
        return
    if found != expected:
        said = repr(found) if found else ("not reported (an image older than this check: it may log them whole; "
                                          "check it, docs/operate.md, Roll back)")
        raise SmokeFailure(f"/ready: the request log's personal columns are {said}, the stack says {expected!r}")
    say(f"ok   /ready (request log personal columns: {found})")


def problem(prediction: object, task: str, classes: list) -> str | None:
    """What is wrong with one prediction for the model's task, or None."""
    if not isinstance(prediction, dict):
        return "a prediction must be an object"
    if task == "regression":
        value = prediction.get("prediction")
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else f"prediction {value!r} is not a finite number"
    if prediction.get("label") not in classes or type(prediction.get("label")) not in {type(c) for c in classes}:
        return f"label {prediction.get('label')!r} is not one of the classes {classes}"
    if task == "binary":
        probability = prediction.get("probability")
        ok = isinstance(probability, float | int) and 0.0 <= probability <= 1.0
        return None if ok else f"probability {probability!r} is not in [0, 1]"
    probabilities = prediction.get("probabilities")
    if not isinstance(probabilities, dict) or list(probabilities) != [str(c) for c in classes]:
        return f"probabilities must name the classes {classes} in order"
    if not all(isinstance(p, float | int) and 0.0 <= p <= 1.0 for p in probabilities.values()) \
            or abs(sum(probabilities.values()) - 1.0) > 1e-4:
        return "probabilities must be in [0, 1] and sum to 1"
    return None


def summary(prediction: dict, task: str) -> object:
    if task == "regression":
        return round(prediction["prediction"], 4)
    if task == "binary":
        return round(prediction["probability"], 4)
    return prediction["label"]


def check_anonymous_refused(base: str, records: list[dict], say=print) -> None:
    """The same request without a token must not be scored: the endpoint's authentication is still in place."""
    anonymous = call(f"{base}/predict", "POST", {"records": records})
    if anonymous.status != 401:
        raise SmokeFailure(f"/predict without a token: expected 401, got {anonymous.status}: the endpoint is not "
                           "authenticated")
    say("ok   /predict without a token is refused with 401")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="base URL of the service, e.g. http://127.0.0.1:8000")
    parser.add_argument("--manifest", type=Path, help="build-context manifest.json whose input example to send")
    parser.add_argument("--expect-version", help="fail unless /ready reports this model version")
    parser.add_argument("--expect-personal", choices=("keep", "drop", "pseudonymise"),
                        help="fail unless /ready reports that the request log treats personal columns this way "
                             "(keep: no check)")
    parser.add_argument("--personal-unreported-ok", action="store_true",
                        help="with --expect-personal: accept an image that does not report the mode (one checked by "
                             "hand: promotion.pinnedPersonalChecked); a mode it reports must still be the expected one")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for /ready")
    parser.add_argument("--token-from-azure-cli", metavar="AUDIENCE",
                        help=f"send a bearer token for this audience (api://<API client id>) from the logged-in Azure "
                             f"CLI; ${TOKEN_ENV} is used when set and this is not given")
    args = parser.parse_args(argv)
    try:
        token = azure_cli_token(args.token_from_azure_cli) if args.token_from_azure_cli else os.environ.get(TOKEN_ENV)
        run(args.url, args.manifest, args.expect_version, args.wait, token=token or None,
            expect_personal=args.expect_personal, unreported_ok=args.personal_unreported_ok)
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
