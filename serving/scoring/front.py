"""The ASGI layer in front of FastAPI: request id, metrics, and the three scoring routes.

The scoring routes (POST /predict, /invocations, /v2/models/{name}[/versions/{version}]/infer) are
answered here, straight from ASGI messages: FastAPI's router, dependency solving and Request object
cost about as much per request as scoring one record does (measured: bench/serving.py's profile),
and these routes need none of it — their handlers take the raw body and return bytes. FastAPI
still declares the same routes (OpenAPI documents them, with examples, from those declarations)
and serves every other route. One layer, no BaseHTTPMiddleware, and the outermost one (create_app returns
it): a scoring request meets uvicorn and this class, nothing else.

Bounded work per request: a scoring body is read here, so it is bounded here. A Content-Length above
MAX_BODY_BYTES is answered 413 before any of the body is read; a body without one (chunked) is counted as it
arrives and answered 413 as soon as the count passes the limit, so a worker holds at most MAX_BODY_BYTES of
any one body. A body that does not arrive whole within BODY_TIMEOUT_S is answered 408 (a client that declares
a body and never sends it, or stops half-way, holds a connection, not the worker). After either answer uvicorn
drops what is left of that body. A worker takes at most MAX_IN_FLIGHT scoring requests at once (each may hold a body
arriving): more are answered 503 with Retry-After, the health routes never. Other routes (FastAPI's) take no body
and never read one.

Logged before answered: a handler's request-log lines may be gathered with those of the other requests of its turn of
the event loop, in one write (scoring/requestlog.py Turn); its answer waits for that write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from . import metrics, requestlog

log = logging.getLogger("scoring")
REQUEST_ID_HEADER = b"x-request-id"
JSON = "application/json"
CONTENT_TYPES = {JSON: JSON.encode()}  # encoded once


class Reply(NamedTuple):
    """A NamedTuple, not a frozen dataclass: built on every request, and a frozen dataclass's __init__
    (object.__setattr__ per field) showed in the profile."""
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[bytes, bytes], ...] = ()  # more response headers (V2's binary answers say where the JSON ends)


Scope = MutableMapping[str, Any]  # an ASGI connection scope (as starlette.types.Scope)
Handler = Callable[[Scope, bytes], Reply]  # (ASGI scope with request_id and path_params, raw body) -> reply
Refusal = Callable[[Scope, str, str], bytes]  # (scope, problem, its type) -> the protocol's own error body


MATCHED_PATHS = 64  # paths whose route match is kept (a model name or version not served is matched each time)


class BodyTooLarge(Exception):
    """The body passed the limit before it was read whole."""


@dataclass(frozen=True)
class BodyLimits:
    max_bytes: int  # a longer body is answered 413
    timeout_s: float  # a body not received whole by then is answered 408
    max_in_flight: int = 100  # scoring requests in progress at once (each may hold a body arriving); more: 503


def plain_refusal(scope: Scope, problem: str, kind: str) -> bytes:
    return orjson.dumps({"error": problem, "type": kind, "request_id": scope["request_id"]})


@dataclass(frozen=True)
class ScoringRoute:
    template: str  # the route as OpenAPI and the metrics name it
    pattern: re.Pattern
    handler: Handler
    refusal: Refusal = plain_refusal  # the body of a 408 or 413, in the route's protocol's error shape


def scoring_route(template: str, handler: Handler, refusal: Refusal = plain_refusal) -> ScoringRoute:
    pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$")
    return ScoringRoute(template, pattern, handler, refusal)


class ScoringFront:
    """Pure ASGI: scoring routes answered directly, the rest passed to FastAPI; metrics for both."""

    def __init__(self, app: Any, routes: list[ScoringRoute], log_failure: Callable[..., bytes],
                 limits: BodyLimits, log: requestlog.Turn) -> None:
        self.app, self.log_failure, self.limits, self.log = app, log_failure, limits, log
        self.exact = {r.template: r for r in routes if "{" not in r.template}
        self.patterns = [r for r in routes if "{" in r.template]
        self.matched: dict[str, tuple[ScoringRoute, dict[str, str]]] = {}  # path -> its route and parameters
        self.counters: dict[tuple[str, str, int], Any] = {}  # (route, method, status) -> counter child
        self.timers: dict[str, Any] = {}  # route -> histogram child
        self.in_flight = 0  # scoring requests in progress in this worker (its event loop: no lock needed)
        self.deadlines = Deadlines(limits.timeout_s)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope["request_id"] = request_id = _request_id(scope)
        route = self.match(scope) if scope["method"] == "POST" else None
        if route is not None:
            status = await self.busy(route, scope, send) if self.in_flight >= self.limits.max_in_flight else None
            if status is None:
                self.in_flight += 1
                try:
                    status = await self.answer(route, scope, receive, send)
                finally:
                    self.in_flight -= 1
            self.observe(route.template, scope["method"], status, started)
            return
        status = 500

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.observe(metrics.route_label(scope), scope["method"], status, started)

    def match(self, scope: Scope) -> ScoringRoute | None:
        path = scope["path"]
        route = self.exact.get(path)
        if route is not None:
            scope["path_params"] = {}
            return route
        if path.startswith("/v2/"):
            known = self.matched.get(path)  # a client sends one path: matched once
            if known is not None:
                scope["path_params"] = dict(known[1])
                return known[0]
            for route in self.patterns:
                found = route.pattern.match(path)
                if found:
                    scope["path_params"] = found.groupdict()
                    if len(self.matched) < MATCHED_PATHS:
                        self.matched[path] = (route, scope["path_params"].copy())
                    return route
        return None

    async def answer(self, route: ScoringRoute, scope: Scope, receive: Any, send: Any) -> int:
        limit = self.limits.max_bytes
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self.refuse(route, scope, send, 413, f"the body is {declared} bytes, more than the limit "
                                     f"of {limit} bytes: send fewer records per request", "body_too_large")
        task = self.deadlines.start()
        try:
            body = await read_body(receive, limit)
        except BodyTooLarge:
            return await self.refuse(route, scope, send, 413, f"the body is more than the limit of {limit} bytes: "
                                     f"send fewer records per request", "body_too_large")
        except asyncio.CancelledError:
            if not self.deadlines.expired(task):
                raise  # cancelled by something else (the server stopping): not ours to answer
            return await self.refuse(route, scope, send, 408, f"the body did not arrive whole within "
                                     f"{self.limits.timeout_s:g} s", "body_timeout")
        finally:
            self.deadlines.stop(task)
        if body is None:  # the client went away: nothing to answer
            return 499
        try:
            reply = route.handler(scope, body)
            # A scored request's log lines (every 200 has some) go out before its answer: in this turn's write.
            if reply.status == 200 and (written := self.log.written) is not None:
                await asyncio.sleep(0)  # the turn's write was queued before this task's next step: it has run
                written.result()  # or raises its error
        except Exception as error:  # a bug or a broken stdout, not bad input: a 500 with an error line, and keep serving
            log.exception("unexpected error on %s", scope["path"])
            with contextlib.suppress(OSError):  # a broken stdout: no line can go out, the 500 still can
                requestlog.write_line(self.log_failure(request_id=scope["request_id"], route=scope["path"],
                                                       status=500, error=f"{type(error).__name__}: {error}"))
            reply = Reply(500, orjson.dumps({"error": "internal error", "request_id": scope["request_id"]}))
        await respond(send, scope, reply)
        return reply.status

    async def refuse(self, route: ScoringRoute, scope: Scope, send: Any, status: int, problem: str, kind: str) -> int:
        """A body refused before it was read whole. After a 413 the connection stays open: uvicorn reads and drops the
        rest of the body (a completed request's body bytes are ignored), so the client is not reset mid-upload, which
        an ingress proxy would turn into a 503. Those bytes stop uvicorn's keep-alive timer for good
        (httptools_impl's data_received), so that connection lasts until the client or the proxy closes it. A 408's
        client stopped sending: its connection is closed after the answer."""
        closing = ((b"connection", b"close"),) if status == 408 else ()
        await respond(send, scope, Reply(status, route.refusal(scope, problem, kind), JSON, closing))
        return status

    async def busy(self, route: ScoringRoute, scope: Scope, send: Any) -> int:
        """More scoring requests in progress than MAX_IN_FLIGHT: a 503 with Retry-After, and an error line (what the
        error-rate alert counts). Health and metrics routes are never refused: a busy replica is not a dead one."""
        problem = f"this worker has {self.limits.max_in_flight} scoring requests in progress: retry shortly"
        requestlog.write_line(self.log_failure(request_id=scope["request_id"], route=scope["path"], status=503,
                                               error=problem))
        await respond(send, scope, Reply(503, route.refusal(scope, problem, "busy"), JSON, ((b"retry-after", b"1"),)))
        return 503

    def observe(self, route: str, method: str, status: int, started: float) -> None:
        """Counter and histogram children are cached: labels() costs a lock and a dict lookup per call."""
        key = (route, method, status)
        counter = self.counters.get(key)
        if counter is None:
            protocol = metrics.protocol_of(route)
            counter = self.counters[key] = metrics.REQUESTS.labels(route, method, str(status), protocol)
            self.timers.setdefault(route, metrics.LATENCY.labels(route, protocol))
        counter.inc()
        metrics.observe(self.timers[route], time.perf_counter() - started)


async def respond(send: Any, scope: Scope, reply: Reply) -> None:
    await send({"type": "http.response.start", "status": reply.status, "headers": [
        (b"content-type", CONTENT_TYPES.get(reply.content_type) or reply.content_type.encode()),
        (b"content-length", b"%d" % len(reply.body)), (REQUEST_ID_HEADER, scope["request_id"].encode()),
        *reply.headers]})
    await send({"type": "http.response.body", "body": reply.body})


class Deadlines:
    """The bodies being read and when each is due, checked by one watchdog task a few times a second: a timer per
    request (asyncio.timeout) cost 8 µs under uvloop, 4 % of a single-record request. An overdue read is cancelled
    and answered 408; the 408 comes within a quarter of the timeout (at most 1 s) after it."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s, self.interval_s = timeout_s, min(1.0, timeout_s / 4)
        self.due: dict[asyncio.Task, float] = {}
        self.cancelled: set[asyncio.Task] = set()
        self.watchdog: asyncio.Task | None = None

    def start(self) -> asyncio.Task:
        task = asyncio.current_task()
        assert task is not None  # an ASGI request always runs in a task
        if self.watchdog is None:
            self.watchdog = asyncio.get_running_loop().create_task(self.watch())
        self.due[task] = time.monotonic() + self.timeout_s
        return task

    def stop(self, task: asyncio.Task) -> None:
        self.due.pop(task, None)
        self.cancelled.discard(task)

    def expired(self, task: asyncio.Task) -> bool:
        """Whether the watchdog cancelled this read (then the cancellation is taken back: the task goes on to
        answer 408)."""
        if task not in self.cancelled:
            return False
        task.uncancel()
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            now = time.monotonic()
            for task, due in list(self.due.items()):
                if now >= due and task not in self.cancelled:
                    self.cancelled.add(task)
                    task.cancel()


async def read_body(receive: Any, limit: int) -> bytes | None:
    """The whole body, or None when the client went away; BodyTooLarge as soon as more than `limit` bytes came
    (a chunked body has no Content-Length to refuse it by: it is counted as it arrives)."""
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    body = message.get("body", b"")
    if len(body) > limit:
        raise BodyTooLarge
    if not message.get("more_body", False):
        return body  # the common case: the whole body in one message
    chunks, size = [body], len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            candidate = value.decode("latin-1")[:128]
            if candidate.isprintable():
                return candidate
    return os.urandom(16).hex()  # 32 hex digits like uuid4().hex, at a fraction of its cost


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
