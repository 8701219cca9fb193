"""Runtime settings, from environment variables. A bad value stops start-up with a message that
names the variable and what it accepts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .privacy import MODES as PERSONAL_MODES

MIN_PSEUDONYM_KEY_CHARS = 32

class SettingsError(ValueError):
    pass


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer between {low} and {high}, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be an integer between {low} and {high}, got {value}")
    return value


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "true" if default else "false").strip().lower()
    if raw not in {"true", "false", "1", "0"}:
        raise SettingsError(f"{name} must be one of true, false, 1, 0; got {raw!r}")
    return raw in {"true", "1"}


# The largest valid request of the example model (the shipped example: MAX_RECORDS=1000 records of its 23 columns, each
# category its longest value, each number 17 significant digits) is 0.80 MB as compact JSON and 1.0 MB indented: 2 MiB
# admits it twice over (tests/serving/test_limits.py sends it). Not more: a body is parsed whole, and JSON of tiny
# values swells about 50 times as Python objects (4 MiB of `{},` took 210 MiB).
MAX_BODY_BYTES = 2 * 1024 * 1024
# Each scoring request in progress may hold a body up to MAX_BODY_BYTES while it arrives, so a worker takes at most this
# many at once (more are answered 503; its health routes never are):
# 100 x 2 MiB + one body parsed (at most ~110 MiB, above) + the process (~100-140 MiB with the example model) stays
# under 512 MiB, the smallest share of a worker in any stack (AKS's 1Gi limit, 2 workers). Measured by
# tests/serving/test_limits.py. Container Apps scales out at 20-30 concurrent requests per replica, far below it.
MAX_IN_FLIGHT = 100
BODY_TIMEOUT_S = 30  # a 2 MiB body takes under 2 s at 10 Mbit/s


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = os.environ.get(name, default).strip().lower()
    if raw not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}; got {raw!r}")
    return raw


def _pseudonym_key(mode: str) -> bytes | None:
    """REQUEST_LOG_PSEUDONYM_KEY (a secret the stack provides), required when the personal columns are pseudonymised."""
    raw = os.environ.get("REQUEST_LOG_PSEUDONYM_KEY", "")
    if mode == "pseudonymise" and len(raw) < MIN_PSEUDONYM_KEY_CHARS:
        raise SettingsError(f"REQUEST_LOG_PSEUDONYM_KEY must be a secret of at least {MIN_PSEUDONYM_KEY_CHARS} "
                            f"characters when REQUEST_LOG_PERSONAL is pseudonymise; got {len(raw)} characters")
    return raw.encode() if mode == "pseudonymise" else None


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    max_records: int
    request_log: bool
    max_body_bytes: int = MAX_BODY_BYTES  # a longer body is answered 413 before it is read whole
    body_timeout_s: int = BODY_TIMEOUT_S  # a body not received whole by then is answered 408
    max_in_flight: int = MAX_IN_FLIGHT  # scoring requests in progress per worker; more are answered 503
    request_log_personal: str = "drop"  # the contract's personal columns in the request log (scoring/privacy.py)
    request_log_pseudonym_key: bytes | None = field(default=None, repr=False)  # a secret: never in a repr or a log

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            model_dir=Path(os.environ.get("MODEL_DIR", "/opt/model")),
            max_records=_int("MAX_RECORDS", 1000, 1, 100_000),
            request_log=_flag("REQUEST_LOG", True),
            max_body_bytes=_int("MAX_BODY_BYTES", MAX_BODY_BYTES, 1024, 64 * 1024 * 1024),
            body_timeout_s=_int("BODY_TIMEOUT_S", BODY_TIMEOUT_S, 1, 600),
            max_in_flight=_int("MAX_IN_FLIGHT", MAX_IN_FLIGHT, 1, 10_000),
            request_log_personal=(personal := _choice("REQUEST_LOG_PERSONAL", "drop", PERSONAL_MODES)),
            request_log_pseudonym_key=_pseudonym_key(personal),
        )


# How long an idle keep-alive connection stays open. A server closing one as the proxy in front sends a request on it
# makes a 502/503 (lsst-sqre/phalanx#5103, basetenlabs/truss#2648); uvicorn's own default is 5 s. Container Apps' Envoy
# does not say how long it keeps one (microsoft/azure-container-apps#1821; Envoy's own default is an hour), nor does
# its auth sidecar, so 300 s makes the race rarer there, not impossible. On AKS the clients' connections cross an Azure
# load balancer, whose idle timeout the Service sets longer than this (infra/k8s_manifests.py LB_IDLE_MINUTES): the
# service, not the balancer, ends an idle connection, with a FIN its client sees.
KEEP_ALIVE_S = 300


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int
    workers: int
    keep_alive_s: int  # how long an idle keep-alive connection stays open

    @classmethod
    def from_env(cls) -> ServerSettings:
        return cls(
            host=os.environ.get("HOST", "0.0.0.0"),
            port=_int("PORT", 8000, 1, 65535),
            workers=_int("WEB_CONCURRENCY", 1, 1, 64),
            keep_alive_s=_int("KEEP_ALIVE_S", KEEP_ALIVE_S, 1, 86_400),
        )
