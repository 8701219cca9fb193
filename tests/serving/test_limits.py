"""Bounded work per request (issue 21 point 2), against a real uvicorn process: a body over MAX_BODY_BYTES is a 413
before it is read whole (by its Content-Length, or counted as a chunked body arrives) and the worker's memory stays
within the smallest container share of any stack; more records than MAX_RECORDS is a 413 on every protocol; a body
that stalls is a 408 after BODY_TIMEOUT_S; and the service keeps serving."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest

from infra import settings as stack_settings
from infra import stack_files
from serving.localrun import stop_service
from serving.scoring import v2
from serving.scoring.model import InputField, Manifest
from serving.scoring.settings import MAX_BODY_BYTES, MAX_IN_FLIGHT, ServerSettings, Settings, SettingsError
from tests.serving.conftest import launch

MAX_RECORDS = 5
BODY_TIMEOUT_S = 1
HUGE = 50 * 1024 * 1024  # what the issue measured: read whole, it peaked at 716 MB
QUANTITY = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30}
SCORING_ROUTES = ("/predict", "/invocations", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")


@pytest.fixture(scope="module")
def manifest(context) -> Manifest:
    return Manifest.read(context.path / "model")


@pytest.fixture(scope="module")
def service(context, tmp_path_factory):
    live = launch(context.path, tmp_path_factory.mktemp("limits") / "requests.jsonl",
                  {"MAX_RECORDS": str(MAX_RECORDS), "BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)})
    yield live
    stop_service(live.process.pid)


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service.url, timeout=60) as http_client:
        yield http_client


def route(template: str, manifest: Manifest) -> str:
    return template.format(name=manifest.model_name, version=manifest.model_version)


def smallest_worker_share() -> int:
    """Bytes of container memory per uvicorn worker, the smallest of any stack file on either target."""
    shares = []
    for stack in stack_files.stacks():
        s = stack_settings.from_values(stack, stack_files.stack_values(stack), {}).serving
        limit = s.aks.memory_limit
        unit = next((u for u in QUANTITY if limit.endswith(u)), "")
        aks = float(limit.removesuffix(unit)) * QUANTITY.get(unit, 1)
        shares += [aks / s.web_concurrency, s.container_app.memory_gi * 2 ** 30 / s.web_concurrency]
    return int(min(shares))


class PeakRss:
    """The worker's resident memory sampled every few milliseconds while a request is sent (one worker: uvicorn
    serves in the process it started)."""

    def __init__(self, pid: int) -> None:
        self.process, self.stop = psutil.Process(pid), threading.Event()
        self.before = self.peak = self.process.memory_info().rss
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(0.2)  # what the worker does after answering counts too
        self.stop.set()
        self.thread.join()


def megabytes(count: int) -> Iterator[bytes]:
    """A body without a Content-Length: httpx sends an iterator chunked."""
    for _ in range(count):
        yield b"[" * (1024 * 1024)


def valid_answer(client: httpx.Client, manifest: Manifest) -> None:
    response = client.post("/predict", json={"records": list(manifest.input_example)})
    assert response.status_code == 200, response.text


def metric(client: httpx.Client, route_name: str, status: int) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("scoring_http_requests_total{") and f'route="{route_name}"' in line \
                and f'status="{status}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_50mb_body_is_refused_413_without_the_worker_holding_it(service, client, manifest, chunked):
    budget = smallest_worker_share()
    offset, refused = service.log_offset(), metric(client, "/predict", 413)
    body = megabytes(HUGE // 2 ** 20) if chunked else b"[" * HUGE
    with PeakRss(service.process.pid) as rss:
        response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert f"limit of {MAX_BODY_BYTES} bytes" in response.json()["problems"][0]["problem"]
    grew = rss.peak - rss.before
    assert grew < HUGE / 4, f"the worker grew by {grew / 2 ** 20:.0f} MiB: it read the {HUGE >> 20} MiB body"
    assert rss.peak < budget / 2, (f"peak RSS {rss.peak / 2 ** 20:.0f} MiB, more than half the smallest container "
                                   f"share of a worker ({budget / 2 ** 20:.0f} MiB)")
    valid_answer(client, manifest)
    # A refusal is a 4xx like any bad input: counted in metrics, never a prediction or error line in the request log.
    assert metric(client, "/predict", 413) == refused + 1
    assert all(json.loads(line)["log_type"] == "prediction" for line in service.log_lines(offset, 1))


@pytest.mark.parametrize("template", SCORING_ROUTES)
def test_a_declared_body_over_the_limit_is_refused_before_any_of_it_is_sent(service, manifest, template):
    """Only the headers are sent: the 413 comes from the Content-Length alone, in the protocol's error shape."""
    with socket.create_connection(("127.0.0.1", int(service.url.rsplit(":", 1)[1])), timeout=10) as raw:
        raw.sendall(f"POST {route(template, manifest)} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json"
                    f"\r\ncontent-length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode())
        head, _, body = read_response(raw).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"connection: close" not in head.lower()  # the rest of the body is dropped, not reset
    assert str(MAX_BODY_BYTES).encode() in body
    shape = {"/predict": "problems", "/invocations": "error_code"}.get(template, "error")
    assert shape in json.loads(body)


def read_response(raw: socket.socket) -> bytes:
    """One response: its head, then as many bytes as its Content-Length says (refusals leave the connection open)."""
    received = b""
    while b"\r\n\r\n" not in received and (chunk := raw.recv(65536)):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length and (chunk := raw.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("sent", [b"", b'{"records": ['], ids=["never-sent", "stops-half-way"])
def test_a_stalled_body_is_answered_408_after_the_timeout(service, client, manifest, sent):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", int(service.url.rsplit(":", 1)[1])), timeout=BODY_TIMEOUT_S + 10) as raw:
        raw.sendall(b"POST /predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                    b"content-length: 1000\r\n\r\n" + sent)
        head, _, body = read_response(raw).partition(b"\r\n\r\n")
        closed = raw.recv(1) == b""  # the client stopped sending: its connection is not kept
    waited = time.monotonic() - started
    assert head.startswith(b"HTTP/1.1 408"), head
    assert closed and b"connection: close" in head.lower()
    assert json.loads(body)["problems"][0]["type"] == "body_timeout"
    assert BODY_TIMEOUT_S <= waited < BODY_TIMEOUT_S + 5
    valid_answer(client, manifest)


def widest_value(field: InputField) -> object:
    """A valid value as long as a real client writes one: a category's longest allowed value, a number with 17
    significant digits inside the column's bounds."""
    if field.is_string:
        return max(field.values, key=len) if field.values else "x" * 64
    low = field.minimum if field.minimum is not None else field.greater_than
    high = field.maximum if field.maximum is not None else field.less_than
    if low is not None and high is not None:
        value = low + (high - low) / 3
    elif low is not None:
        value = low + 123456.78901234567
    else:
        value = (high if high is not None else 0.0) - 123456.78901234567
    return round(value) if field.type in ("long", "integer") else value


def largest_requests(manifest: Manifest, count: int) -> dict[str, tuple[str, str, bytes]]:
    """The largest valid request of each protocol: `count` of the widest records, indented as a person writes JSON."""
    record = {f.name: widest_value(f) for f in manifest.inputs}
    records = [record] * count
    names = list(record)
    csv = "\n".join([",".join(names), *(",".join(str(v) for v in record.values()) for _ in records)]) + "\n"
    tensors = [{"name": n, "datatype": t, "shape": [count], "data": [record[n]] * count}
               for n, t in v2.input_types(manifest).items()]
    indented = {"/predict": {"records": records}, "/invocations": {"dataframe_records": records},
                "/v2/models/{name}/infer": {"inputs": tensors}}
    requests = {name: (template, "application/json", json.dumps(body, indent=2).encode())
                for name, (template, body) in {"predict": ("/predict", indented["/predict"]),
                                               "dataframe_records": ("/invocations", indented["/invocations"]),
                                               "v2": ("/v2/models/{name}/infer",
                                                      indented["/v2/models/{name}/infer"])}.items()}
    return {**requests, "csv": ("/invocations", "text/csv", csv.encode())}


def test_the_default_limit_admits_the_largest_valid_request_with_room_to_spare(live, manifest, monkeypatch):
    """The session's service runs with the default MAX_RECORDS and MAX_BODY_BYTES."""
    for name in ("MAX_RECORDS", "MAX_BODY_BYTES"):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings.from_env()
    count = defaults.max_records
    assert defaults.max_body_bytes == MAX_BODY_BYTES
    with httpx.Client(base_url=live.url, timeout=60) as client:
        for name, (template, content_type, body) in largest_requests(manifest, count).items():
            assert 2 * len(body) <= MAX_BODY_BYTES, f"{name}: {len(body)} bytes leave less than 2x room"
            response = client.post(route(template, manifest), content=body, headers={"content-type": content_type})
            assert response.status_code == 200, (name, response.text[:300])


@pytest.mark.parametrize(("template", "content_type", "encode", "shape"), [
    ("/predict", "application/json", lambda rs: json.dumps({"records": rs}), "problems"),
    ("/invocations", "application/json", lambda rs: json.dumps({"dataframe_records": rs}), "error_code"),
    ("/invocations", "application/json", lambda rs: json.dumps({"dataframe_split": {
        "columns": list(rs[0]), "data": [list(r.values()) for r in rs]}}), "error_code"),
    ("/invocations", "text/csv", lambda rs: "\n".join([",".join(rs[0]), *(",".join(
        "" if v is None else str(v) for v in r.values()) for r in rs)]), "error_code"),
    ("/v2/models/{name}/infer", "application/json", None, "error"),
    ("/v2/models/{name}/versions/{version}/infer", "application/json", None, "error"),
], ids=["predict", "dataframe_records", "dataframe_split", "csv", "v2", "v2-version"])
def test_more_records_than_max_records_is_413_on_every_protocol(client, manifest, template, content_type, encode,
                                                                 shape):
    records = [dict(manifest.input_example[0])] * (MAX_RECORDS + 1)
    if encode is None:
        encode = lambda rs: json.dumps({"inputs": [  # noqa: E731  one row per protocol above
            {"name": n, "datatype": t, "shape": [len(rs)], "data": [r[n] for r in rs]}
            for n, t in v2.input_types(manifest).items()]})
    response = client.post(route(template, manifest), content=encode(records), headers={"content-type": content_type})
    assert response.status_code == 413, response.text
    assert shape in response.json()
    assert f"at most {MAX_RECORDS}" in response.text
    assert client.post(route(template, manifest), content=encode(records[:MAX_RECORDS]),
                       headers={"content-type": content_type}).status_code == 200


@pytest.mark.parametrize(("method", "path"), [("POST", "/health"), ("GET", "/ready"), ("POST", "/predict/"),
                                              ("PUT", "/predict"), ("POST", "/nowhere")])
def test_other_routes_never_read_a_large_body(service, client, manifest, method, path):
    with PeakRss(service.process.pid) as rss:
        response = client.request(method, path, content=megabytes(HUGE // 2 ** 20))
    assert response.status_code < 500
    assert rss.peak - rss.before < HUGE / 4
    valid_answer(client, manifest)


def test_bodies_arriving_at_once_stay_within_a_workers_share(context, manifest, tmp_path):
    """MAX_IN_FLIGHT bodies of just under MAX_BODY_BYTES, all still arriving (the defaults: the most a worker
    buffers), keep it within the smallest container share of any worker; one scoring request more is a 503 with
    Retry-After, while the health routes still answer (a busy replica is not restarted by its probes)."""
    service = launch(context.path, tmp_path / "requests.jsonl")
    port, budget = int(service.url.rsplit(":", 1)[1]), smallest_worker_share()
    head = (f"POST /predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {MAX_BODY_BYTES}\r\n\r\n").encode()
    held: list[socket.socket] = []
    try:
        with PeakRss(service.process.pid) as rss:
            for _ in range(MAX_IN_FLIGHT):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=30))
                held[-1].sendall(head + b"[" * (MAX_BODY_BYTES - 1))
            time.sleep(1)
            with httpx.Client(base_url=service.url, timeout=30) as client:
                assert client.get("/health").status_code == 200 and client.get("/ready").status_code == 200
                busy = client.post("/predict", json={"records": manifest.input_example})
                assert busy.status_code == 503 and busy.headers["retry-after"] == "1", busy.text
        assert rss.peak < budget, f"peak RSS {rss.peak / 2 ** 20:.0f} MiB, over a worker's share {budget >> 20} MiB"
        for connection in held:
            connection.close()
        with httpx.Client(base_url=service.url, timeout=30) as client:
            valid_answer(client, manifest)
    finally:
        for connection in held:
            connection.close()
        stop_service(service.process.pid)


@pytest.mark.parametrize(("name", "raw", "message"), [
    ("MAX_BODY_BYTES", "lots", "MAX_BODY_BYTES must be an integer between 1024 and 67108864, got 'lots'"),
    ("MAX_BODY_BYTES", "10", "MAX_BODY_BYTES must be an integer between 1024 and 67108864, got 10"),
    ("BODY_TIMEOUT_S", "0", "BODY_TIMEOUT_S must be an integer between 1 and 600, got 0"),
])
def test_bad_limits_stop_start_up_naming_the_variable(monkeypatch, name, raw, message):
    monkeypatch.setenv(name, raw)
    with pytest.raises(SettingsError, match=message):
        Settings.from_env()


def test_an_idle_connection_stays_open_past_uvicorns_own_keep_alive(live):
    """Audit K1: uvicorn closes an idle connection after 5 s by default, before the proxy in front stops reusing it
    (a request sent as it closes is a 502). The service keeps it KEEP_ALIVE_S (300 s): one connection, a request, 6 s
    idle, and a second request on the same connection is answered."""
    port = int(live.url.rsplit(":", 1)[1])
    request = b"GET /ready HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        answers = []
        for pause in (0, 6):
            time.sleep(pause)
            connection.sendall(request)
            answers.append(read_response(connection).split(b"\r\n", 1)[0])  # a closed connection: no head
    assert answers == [b"HTTP/1.1 200 OK"] * 2



def test_the_keep_alive_is_300_s_and_a_bad_one_stops_start_up(monkeypatch):
    monkeypatch.delenv("KEEP_ALIVE_S", raising=False)
    assert ServerSettings.from_env().keep_alive_s == 300  # ingress-nginx keeps its upstream connections 60 s
    monkeypatch.setenv("KEEP_ALIVE_S", "0")
    with pytest.raises(SettingsError, match="KEEP_ALIVE_S must be an integer between 1 and 86400, got 0"):
        ServerSettings.from_env()
