"""What goes on the wire: uvicorn's httptools protocol, with a response's head and body sent together.

uvicorn writes a response's status line and headers, then its body, as two writes to the transport, and uvloop sends
each at once: two send() calls and two TCP segments for an answer of a few hundred bytes, where one would do (aiohttp
joins them the same way, aio-libs/aiohttp#10991). At 8 connections the second send cost 5 to 10 % of a one-record
request's CPU (measured side by side; the client reads one segment less, too).

HeldWrites holds a write until the next one, which it sends joined to it; a write with none after it in the same turn
of the event loop goes out on the loop's next turn (call_soon). So the head waits for the body (which uvicorn writes in
the same turn: its send does not wait unless the transport's buffer is full), and the order of the bytes is kept.
close() sends what is held first; abort() drops it, as it drops the transport's own buffer. Everything else is the
transport's own (flow control still pauses on its buffer: what is held is one write, for at most one turn).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HeldWrites:
    """An asyncio transport whose write is held until the next write or the loop's next turn."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport, self.loop = transport, loop
        self.held: bytes | None = None

    def write(self, data: bytes) -> None:
        if self.held is None:
            self.held = data
            self.loop.call_soon(self.flush)
        else:  # the head and the body (or two chunks) in one send, neither copied (uvloop: one writev)
            held, self.held = self.held, None
            self.transport.writelines((held, data))

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))  # uvicorn does not call it: one held write, as write() holds one

    def flush(self) -> None:
        """Send what is held (on the turn after it was written, or before closing)."""
        held, self.held = self.held, None
        if held is not None and not self.transport.is_closing():
            self.transport.write(held)

    def write_eof(self) -> None:
        self.flush()
        self.transport.write_eof()

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self.held = None
        self.transport.abort()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + len(self.held or b"")

    def __getattr__(self, name: str) -> Any:  # the rest: the transport's (get_extra_info, pause_reading, ...)
        return getattr(self.transport, name)


class HttpToolsHeldWrites(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through HeldWrites (scoring/serve.py's UVICORN_FLAGS["http"])."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        held: Any = HeldWrites(transport, self.loop)  # a transport to uvicorn: it calls only what it has
        super().connection_made(held)
