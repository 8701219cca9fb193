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

The quality loop's labels (monitoring/quality_job.py, `make quality`): each record carries the contract's ids (unique to
this run: --id-base plus its number), and with --labels the true outcome of every record the service answered is
appended to that file (JSON lines: the ids, the target, `known_at`), as a business learns it later:
    --label-delay 60        known 60 s after the answer (a label after the report's --as-of is not used yet)
    --unlabelled 0.1        a tenth of the records never get one
    --degrade 0.6           the outcome stops following the model: a share of the labels, rising from 0 at the first
                            request to 0.6 at the last, is another class (a regressor's value is scaled by 0.5-1.5)
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
from datetime import UTC, datetime
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


def records(model: ModelModule, count: int, seed: int, shifts: list[Shift], id_base: int | None = None) -> list[dict]:
    """`count` records of the training distribution (nulls for missing values), shifted as asked; with `id_base`, each
    carries the contract's ids (id_base plus its number: unique to the run)."""
    return labelled(model, count, seed, shifts, id_base)[0]


def labelled(model: ModelModule, count: int, seed: int, shifts: list[Shift],
             id_base: int | None = None) -> tuple[list[dict], list]:
    """records() and each record's true outcome (the example table's target)."""
    contract = model.contract
    table = data.example_table(model, count, seed)
    frame = apply_shifts(table[contract.feature_names], shifts, seed)
    numbers = {f.name for f in contract.numbers}
    out: list[dict] = []
    for number, row in enumerate(frame.to_dict(orient="records")):
        record: dict[str, object] = {name: id_base + number for name in contract.ids} if id_base is not None else {}
        record.update({str(k): (None if v is None or (isinstance(v, float) and math.isnan(v)) else
                                float(v) if k in numbers else str(v)) for k, v in row.items()})
        out.append(record)
    return out, [_plain(v) for v in table[contract.target.name]]


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class Labels:
    """Where and how the true outcomes are written (see the module's docstring)."""
    path: Path
    delay_s: float = 0.0
    unlabelled: float = 0.0
    degrade: float = 0.0

    def __post_init__(self) -> None:
        for name in ("unlabelled", "degrade"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"--{name} must be a share in 0..1, got {getattr(self, name)}")
        if self.delay_s < 0:
            raise ValueError(f"--label-delay must be 0 or more seconds, got {self.delay_s}")

    def lines(self, model: ModelModule, batch: list[dict], truths: list, answered_at: float, progress: float,
              rng: np.random.Generator) -> list[str]:
        """The batch's label lines: `progress` (0 at the first request, 1 at the last) scales the degraded share."""
        contract, known = model.contract, datetime.fromtimestamp(answered_at + self.delay_s, UTC).isoformat()
        out = []
        for record, truth in zip(batch, truths, strict=True):
            if rng.random() < self.unlabelled:
                continue
            if rng.random() < self.degrade * progress:
                truth = _other(contract, truth, rng)
            out.append(json.dumps({**{name: record[name] for name in contract.ids}, contract.target.name: truth,
                                   "known_at": known}))
        return out


def _other(contract: Contract, truth: object, rng: np.random.Generator) -> object:
    """An outcome the model did not learn: another class, or the value scaled by 0.5-1.5."""
    classes = list(contract.target.classes or ())
    if not classes:
        return float(truth) * float(rng.uniform(0.5, 1.5))  # type: ignore[arg-type]
    others = [c for c in classes if c != truth]
    return others[int(rng.integers(len(others)))]


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
         shifts: list[Shift] | None = None, max_seconds: float = 300, timeout: float = 10, progress=print,
         labels: Labels | None = None, id_base: int | None = None) -> dict:
    url = check_url(url)
    if not 1 <= requests <= MAX_REQUESTS:
        raise ValueError(f"--requests must be in 1..{MAX_REQUESTS}")
    if id_base is None and model.contract.ids:
        id_base = int(time.time() * 1000) * 1000  # unique to the run: a label joins only its own run's predictions
    pool, truths = labelled(model, requests * batch, seed, shifts or [], id_base)
    rng = np.random.default_rng(seed + 2)
    written = 0
    if labels is not None:
        labels.path.parent.mkdir(parents=True, exist_ok=True)
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
        chunk = slice(i * batch, (i + 1) * batch)
        try:
            status = post(url, pool[chunk], timeout)
        except (urllib.error.URLError, OSError) as error:
            raise ConnectionError(f"{url} does not answer ({error}); start the service with `make local`") from error
        statuses[status] = statuses.get(status, 0) + 1
        if labels is not None and status == 200:  # only what was scored has an outcome to learn
            # known once answered (the service's scored_at is before this), plus the delay: a label applies only to
            # predictions scored before its outcome was known (monitoring/inference.py applies)
            lines = labels.lines(model, pool[chunk], truths[chunk], time.time(), i / max(1, requests - 1), rng)
            with labels.path.open("a") as out:
                out.writelines(line + "\n" for line in lines)
            written += len(lines)
        sent += 1
        if sent % every == 0 or sent == requests:
            progress(f"{sent}/{requests} requests ({sent * batch} records) in {time.monotonic() - started:.1f}s; "
                     f"status {dict(sorted(statuses.items()))}")
    return {"requests": sent, "records": sent * batch, "seconds": round(time.monotonic() - started, 2),
            "statuses": statuses, "shifts": [s.__dict__ for s in shifts or []], "id_base": id_base,
            "labels": {"file": str(labels.path), "written": written} if labels is not None else None}


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
    p.add_argument("--labels", type=Path, help="append the true outcomes here (JSON lines; make quality reads them)")
    p.add_argument("--label-delay", type=float, default=0.0, help="seconds until an outcome is known")
    p.add_argument("--unlabelled", type=float, default=0.0, help="share of records never labelled")
    p.add_argument("--degrade", type=float, default=0.0, help="share of labels made wrong by the last request")
    p.add_argument("--id-base", type=int, help="the first record's id (default: from the clock, unique to the run)")
    args = p.parse_args(argv)
    try:
        model = contracts.load(args.model or served_model() or stack_files.project("dev"))
        shifts = [Shift.parse(text, model.contract) for text in args.shift]
        labels = Labels(args.labels, args.label_delay, args.unlabelled, args.degrade) if args.labels else None
        summary = send(model, args.url, args.requests, args.rate, args.batch, args.seed, shifts, args.max_seconds,
                       labels=labels, id_base=args.id_base)
    except (ValueError, ConnectionError) as error:
        print(f"traffic: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0 if set(summary["statuses"]) <= {200} else 1


if __name__ == "__main__":
    sys.exit(main())
