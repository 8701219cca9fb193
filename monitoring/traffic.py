"""`make traffic`: send realistic records to the local scoring service, optionally shifted, to have something to watch.

    python -m monitoring.traffic --requests 500 --rate 50
    python -m monitoring.traffic --requests 500 --shift <number column>=3            # multiply by 3
    python -m monitoring.traffic --requests 500 --shift <category column>=<value>    # in every record
    python -m monitoring.traffic --requests 500 --shift <category column>=<value>:0.5  # in half the records

Records come from the model module's example_data (the training distribution, --model: the dev stack's model by
default) with their own seed; the contract says which columns are numbers and which categories. Only loopback URLs
(127.0.0.1, localhost, ::1) are accepted; the run is bounded by --requests and --max-seconds. Prints progress, and a
summary line at the end with the answers' statuses: a numeric shift that leaves the contract's bounds is refused by the
service (422) and counted there; a category shifted to a value a closed column does not list is refused here.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from infra import stack_files
from training import contract as contracts
from training import data
from training.contract import Category, Contract, ModelModule, Number

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_REQUESTS = 100_000


@dataclass(frozen=True)
class Shift:
    feature: str
    factor: float | None = None  # numeric: multiply
    value: str | None = None     # categorical: set to this value
    share: float = 1.0           # categorical: in this share of the records

    @classmethod
    def parse(cls, text: str, contract: Contract) -> Shift:
        feature, sep, spec = text.partition("=")
        if not sep or not spec:
            raise ValueError(f"--shift {text!r}: expected feature=factor (numeric) or feature=value[:share] (categorical)")
        kinds = {f.name: f for f in contract.features}
        if isinstance(kinds.get(feature), Number):
            try:
                factor = float(spec.lstrip("x*"))
            except ValueError:
                raise ValueError(f"--shift {text!r}: {feature} is numeric, give a factor like {feature}=3") from None
            return cls(feature, factor=factor)
        category = kinds.get(feature)
        if isinstance(category, Category):
            value, _, share = spec.partition(":")
            if category.values is not None and not category.open and value not in category.values:
                raise ValueError(f"--shift {text!r}: the service refuses a {feature} outside its contract; "
                                 f"use one of {', '.join(category.values)}")
            share_value = float(share) if share else 1.0
            if not 0 < share_value <= 1:
                raise ValueError(f"--shift {text!r}: the share must be in (0, 1]")
            return cls(feature, value=value, share=share_value)
        raise ValueError(f"--shift {text!r}: unknown feature {feature!r}; features: {', '.join(contract.feature_names)}")


def apply_shifts(frame: pd.DataFrame, shifts: list[Shift], seed: int) -> pd.DataFrame:
    frame = frame.copy()
    rng = np.random.default_rng(seed + 1)
    for shift in shifts:
        if shift.factor is not None:
            frame[shift.feature] = frame[shift.feature] * shift.factor
        else:
            chosen = rng.random(len(frame)) < shift.share
            frame[shift.feature] = frame[shift.feature].astype(object).where(~chosen, shift.value)
    return frame


def records(model: ModelModule, count: int, seed: int, shifts: list[Shift]) -> list[dict]:
    """`count` records of the training distribution (nulls for missing values), shifted as asked."""
    contract = model.contract
    frame = apply_shifts(data.example_table(model, count, seed)[contract.feature_names], shifts, seed)
    numbers = {f.name for f in contract.numbers}
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else
                        float(v) if k in numbers else str(v)) for k, v in row.items()})
    return out


def served_model(state: Path = ROOT / ".local") -> str | None:
    """The model module `make local` serves now (.local/service.json), if it serves one."""
    try:
        return json.loads((state / "service.json").read_text()).get("model")
    except (OSError, ValueError):
        return None


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK:
        raise ValueError(f"--url {url!r}: traffic goes only to the local service (http://127.0.0.1:<port> or localhost)")
    return url.rstrip("/")


def post(url: str, batch: list[dict], timeout: float) -> int:
    request = urllib.request.Request(f"{url}/predict", data=json.dumps({"records": batch}).encode(),
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def send(model: ModelModule, url: str, requests: int, rate: float, batch: int = 1, seed: int = 2024,
         shifts: list[Shift] | None = None, max_seconds: float = 300, timeout: float = 10, progress=print) -> dict:
    url = check_url(url)
    if not 1 <= requests <= MAX_REQUESTS:
        raise ValueError(f"--requests must be in 1..{MAX_REQUESTS}")
    pool = records(model, requests * batch, seed, shifts or [])
    started = time.monotonic()
    statuses: dict[int, int] = {}
    sent = 0
    every = max(1, requests // 10)
    for i in range(requests):
        if time.monotonic() - started > max_seconds:
            progress(f"stopping: --max-seconds {max_seconds:g} reached")
            break
        if rate > 0:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        try:
            status = post(url, pool[i * batch:(i + 1) * batch], timeout)
        except (urllib.error.URLError, OSError) as error:
            raise ConnectionError(f"{url} does not answer ({error}); start the service with `make local`") from error
        statuses[status] = statuses.get(status, 0) + 1
        sent += 1
        if sent % every == 0 or sent == requests:
            progress(f"{sent}/{requests} requests ({sent * batch} records) in {time.monotonic() - started:.1f}s; "
                     f"status {dict(sorted(statuses.items()))}")
    return {"requests": sent, "records": sent * batch, "seconds": round(time.monotonic() - started, 2),
            "statuses": statuses, "shifts": [s.__dict__ for s in shifts or []]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m monitoring.traffic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--model", help="the served model's project name or module (default: what `make local` serves, else "
                                   "the dev stack's name)")
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--rate", type=float, default=50, help="requests per second (0 = as fast as possible)")
    p.add_argument("--batch", type=int, default=1, help="records per request")
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--shift", action="append", default=[],
                   help="numeric feature=factor (multiply), categorical feature=value[:share]; repeatable")
    p.add_argument("--max-seconds", type=float, default=300)
    args = p.parse_args(argv)
    try:
        model = contracts.load(args.model or served_model() or stack_files.project("dev"))
        shifts = [Shift.parse(text, model.contract) for text in args.shift]
        summary = send(model, args.url, args.requests, args.rate, args.batch, args.seed, shifts, args.max_seconds)
    except (ValueError, ConnectionError) as error:
        print(f"traffic: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0 if set(summary["statuses"]) <= {200} else 1


if __name__ == "__main__":
    sys.exit(main())
