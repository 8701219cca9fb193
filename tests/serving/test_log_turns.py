"""The request log's writes gathered per turn of the event loop (scoring/requestlog.py Turn), through the app's own
ASGI front: requests a worker takes in one turn share one write() once it has seen company, a lone request's lines go
out at once, and every request is logged before it is answered. A write that fails answers 500 and the worker keeps
serving."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
import pytest

from serving.scoring import requestlog
from serving.scoring.app import create_app, load_model
from serving.scoring.model import Manifest


class Recorder:
    """A stream that records each write() and the request ids of its lines, in one list with the answers' starts."""

    max_line = requestlog.MAX_LINE_BYTES

    def __init__(self, events: list[tuple[str, str]]) -> None:
        self.events, self.broken = events, False
        self.writes: list[list[str]] = []
        self.at_once: list[bool] = []  # each write: made in a request's own step (at once), or by the turn's flush

    def write(self, lines: Sequence[bytes]) -> None:
        if self.broken:
            raise BrokenPipeError("stdout closed")
        ids = [orjson.loads(line)["request_id"] for line in lines]
        self.writes.append(ids)
        try:
            self.at_once.append(asyncio.current_task() is not None)
        except RuntimeError:  # no event loop
            self.at_once.append(True)
        self.events += [("logged", request_id) for request_id in ids]


@pytest.fixture
def manifest(context) -> Manifest:
    return Manifest.read(context.path / "model")


@pytest.fixture
def front(context, monkeypatch):
    monkeypatch.setenv("MODEL_DIR", str(context.path / "model"))
    monkeypatch.setenv("REQUEST_LOG", "true")
    app = create_app()
    load_model(app.app.state.model, context.path / "model")
    return app


async def call(front, body: bytes, request_id: str, events: list[tuple[str, str]], statuses: dict[str, int]) -> None:
    scope = {"type": "http", "method": "POST", "path": "/predict", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())]}

    async def receive() -> dict:  # the whole body at once, as uvicorn hands a small request over
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            events.append(("answered", request_id))
            statuses[request_id] = message["status"]

    await front(scope, receive, send)


def at_once(front, body: bytes, ids: list[str], events: list, statuses: dict) -> None:
    """The requests started together: each one's first step in the same turn of the loop, as uvicorn starts the
    requests that arrived together."""
    async def together() -> None:
        await asyncio.gather(*(call(front, body, request_id, events, statuses) for request_id in ids))
    asyncio.run(together())


def logged_before_answered(events: list[tuple[str, str]], ids: list[str]) -> bool:
    return all(events.index(("logged", request_id)) < events.index(("answered", request_id)) for request_id in ids)


def test_requests_of_one_turn_share_a_write_once_company_is_seen_and_each_is_logged_before_answered(front, manifest):
    body = orjson.dumps({"records": [dict(manifest.input_example[0])]})
    events: list[tuple[str, str]] = []
    statuses: dict[str, int] = {}
    recorder = front.log.stream = Recorder(events)

    async def rounds() -> list[bool]:
        gathering = []
        for batch in (["a1", "a2", "a3"], ["b1", "b2", "b3", "b4"], ["c1"], ["d1"]):
            await asyncio.gather(*(call(front, body, request_id, events, statuses) for request_id in batch))
            await asyncio.sleep(0)  # the turn ends
            gathering.append(front.log.gathering)
        return gathering

    gathering = asyncio.run(rounds())
    # Alone lately: three writes at once, which shows company; then the next turn's four share one write; a gathered
    # write of one request switches back; the next lone request is written at once.
    assert recorder.writes == [["a1"], ["a2"], ["a3"], ["b1", "b2", "b3", "b4"], ["c1"], ["d1"]]
    assert gathering == [True, True, False, False]
    every = ["a1", "a2", "a3", "b1", "b2", "b3", "b4", "c1", "d1"]
    assert set(statuses) == set(every) and set(statuses.values()) == {200}
    assert logged_before_answered(events, every)


def test_a_gathered_write_that_fails_answers_500_and_the_worker_keeps_serving(front, manifest, monkeypatch):
    """stdout broken (the error lines cannot go out either): each request of the failed write is answered 500, none
    is answered unlogged, and once stdout takes writes again the worker serves and logs as before."""
    body = orjson.dumps({"records": [dict(manifest.input_example[0])]})
    events: list[tuple[str, str]] = []
    statuses: dict[str, int] = {}
    recorder = front.log.stream = Recorder(events)
    monkeypatch.setitem(requestlog._streams, 1, recorder)  # the error lines' stream: the same stdout
    at_once(front, body, ["a1", "a2"], events, statuses)  # company seen: the next turn gathers
    recorder.broken = True
    at_once(front, body, ["b1", "b2", "b3"], events, statuses)
    recorder.broken = False
    at_once(front, body, ["c1", "c2"], events, statuses)
    assert [statuses[request_id] for request_id in ["b1", "b2", "b3"]] == [500, 500, 500]  # none answered unlogged
    assert [statuses[request_id] for request_id in ["a1", "a2", "c1", "c2"]] == [200] * 4
    assert logged_before_answered(events, ["a1", "a2", "c1", "c2"])


def test_outside_an_event_loop_a_write_goes_out_at_once():
    events: list[tuple[str, str]] = []
    turn = requestlog.Turn(Recorder(events))  # type: ignore[arg-type]
    turn.write([b'{"request_id":"x"}\n'])
    assert events == [("logged", "x")] and turn.written is None



def test_requests_one_a_turn_every_turn_are_gathered_and_a_quiet_turn_switches_back(front, manifest):
    """A busy worker writing at once answers each request in its own turn, so the next requests come one a turn: no
    turn has two writers, yet the loop never waits. A turn that writes right after one that wrote is busy too, so the
    worker gathers (else it stays in whichever state it started in). After a quiet turn a lone request is written at
    once again."""
    body = orjson.dumps({"records": [dict(manifest.input_example[0])]})
    events: list[tuple[str, str]] = []
    statuses: dict[str, int] = {}
    recorder = front.log.stream = Recorder(events)
    ids = [f"r{number}" for number in range(8)]

    async def one_a_turn() -> tuple[list[bool], bool]:
        tasks, gathering = [], []
        for request_id in ids:  # each request's first step in the turn after the one before it
            tasks.append(asyncio.create_task(call(front, body, request_id, events, statuses)))
            await asyncio.sleep(0)
            gathering.append(front.log.gathering)
        await asyncio.gather(*tasks)
        for _ in range(4):
            await asyncio.sleep(0)  # quiet turns
        for request_id in ("lone1", "lone2"):  # the first switches back (its own lines may still be gathered)
            await call(front, body, request_id, events, statuses)
        return gathering, recorder.at_once[-1]

    gathering, lone_at_once = asyncio.run(one_a_turn())
    # Busy seen: gathering holds while a request comes every turn (here each gathered write still holds one request's
    # lines, as the test spaces them; a real client's next requests come together once answers leave together).
    assert gathering[-4:] == [True] * 4
    assert recorder.writes[-1] == ["lone2"] and lone_at_once
    assert set(statuses.values()) == {200} and logged_before_answered(events, [*ids, "lone1", "lone2"])
