"""A response's head and body leave in one write (scoring/wire.py), in order, and nothing held is lost or sent late."""

from __future__ import annotations

import asyncio
import http.client
import subprocess

import orjson

from serving import smoke
from serving.localrun import free_port, start_service, stop_service
from serving.scoring.model import Manifest
from serving.scoring.wire import HeldWrites


class Socket:
    """The transport under HeldWrites: what was sent, in order, and whether it is closed."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = self.aborted = self.eof = False

    def write(self, data: bytes) -> None:
        assert not self.closed and not self.eof, "a write after the connection was closed"
        self.sent.append(data)

    def writelines(self, lines: tuple[bytes, ...]) -> None:  # one send of all of them (uvloop: writev)
        self.write(b"".join(lines))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def write_eof(self) -> None:
        self.eof = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"extra {name}"


def held() -> tuple[HeldWrites, Socket]:
    socket = Socket()
    return HeldWrites(socket, asyncio.get_running_loop()), socket  # type: ignore[arg-type]


def test_a_head_and_its_body_leave_in_one_write_and_a_lone_write_by_the_end_of_its_turn():
    async def scenario() -> None:
        writes, socket = held()
        writes.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert socket.sent == [] and writes.get_write_buffer_size() == 19, "the head waits for the body"
        writes.write(b"{}")
        assert socket.sent == [b"HTTP/1.1 200 OK\r\n\r\n{}"], "head and body in one write, at once"
        writes.write(b"a")
        writes.write(b"b")
        writes.write(b"c")  # a third write waits for a fourth, or the end of the turn
        assert socket.sent[1:] == [b"ab"]
        await asyncio.sleep(0)
        assert socket.sent[1:] == [b"ab", b"c"], "the loop's next turn sends what is held, in order"
        assert writes.get_extra_info("socket") == "extra socket", "the rest is the transport's own"
    asyncio.run(scenario())


def test_closing_sends_what_is_held_first_and_aborting_or_a_lost_connection_drops_it():
    async def scenario() -> None:
        writes, socket = held()
        writes.write(b"last")
        writes.close()
        assert socket.sent == [b"last"] and socket.closed
        await asyncio.sleep(0)  # the turn's flush finds nothing more to send, and writes nothing after the close
        for end in ("abort", "lost"):
            writes, socket = held()
            writes.write(b"dropped")
            if end == "abort":
                writes.abort()
            else:
                socket.closed = True  # the peer went away: the transport is closing
            await asyncio.sleep(0)
            assert socket.sent == [], end
        writes, socket = held()
        writes.write(b"before eof")
        writes.write_eof()
        assert socket.sent == [b"before eof"] and socket.eof
    asyncio.run(scenario())


def write_calls(pid: int) -> int:
    """The process's write system calls so far (proc(5): /proc/<pid>/io syscw)."""
    with open(f"/proc/{pid}/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("syscw:"))


def test_the_live_service_writes_each_answer_once_and_its_log_line_once(context):
    """One worker, one keep-alive connection, one request at a time: each request costs two writes, its answer (head
    and body together) and its request-log line; uvicorn alone wrote the head and the body apart, three."""
    manifest = Manifest.read(context.path / "model")
    body = orjson.dumps({"records": [manifest.input_example[0]]})
    port = free_port()
    process = start_service(context.path, port, stdout=subprocess.DEVNULL)
    try:
        smoke.wait_for(f"http://127.0.0.1:{port}", "/ready", 120)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        requests = 40
        for index in range(requests + 1):
            if index == 1:  # after the first: the connection is open and every lazy start-up step has run
                before = write_calls(process.pid)
            connection.request("POST", "/predict", body, {"content-type": "application/json"})
            answer = connection.getresponse()
            assert answer.status == 200 and orjson.loads(answer.read())["predictions"], answer.status
        per_request = (write_calls(process.pid) - before) / requests
        connection.close()
    finally:
        stop_service(process.pid)
    assert 1.9 <= per_request <= 2.2, f"{per_request:.2f} writes a request"
