"""Server-sent events out of a byte stream, for the lean model stream (``app/engine/openai_stream.py``).

The openai SDK decodes every line to ``str`` and builds a ``ServerSentEvent`` per chunk; a
chat-completions stream only needs each event's ``data``, as bytes that go straight to ``orjson``
(the SDK ignores event names on this endpoint, and so does this). Line endings are ``\\n``,
``\\r\\n`` or ``\\r`` and may be split across reads; comments (keep-alives) and the ``id`` and
``retry`` fields are skipped, and so is an event without data (where the SDK would fail to parse
an empty string as JSON). An event is dispatched at its blank line, so a stream cut short never
yields half an event.

Two shapes of a provider's error are not data events and would otherwise pass unseen, leaving a
stream that simply ends: an event named ``error`` (``event: error`` then its ``data``), and an
``error:`` field of its own, which llama.cpp's server wrote for an error inside a stream. Either
is kept in ``error`` (its data, the first one) and never returned as an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DATA = b"data"
EVENT = b"event"
ERROR = b"error"


@dataclass(slots=True)
class SSEDecoder:
    error: bytes | None = None  # an error event's data, or an ``error:`` field's value
    _pending: bytes = b""
    _data: list[bytes] = field(default_factory=list)
    _event: bytes = b""
    _after_cr: bool = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data of every event that ``chunk`` completes, in order."""
        if not chunk:
            return []
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]  # the second half of a \r\n cut between two reads
        buffer = self._pending + chunk if self._pending else chunk
        self._after_cr = buffer[-1:] == b"\r"
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, self._pending = buffer.split(b"\n")
        events: list[bytes] = []
        for line in lines:
            if not line:
                if self._data:
                    data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                    self._data = []
                    if self._event:
                        named, self._event = self._event, b""
                        if named == ERROR:
                            if self.error is None:
                                self.error = data
                            continue
                    events.append(data)
                self._event = b""
                continue
            if line[0] == 58:  # ":" starts a comment (a keep-alive)
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == DATA:
                self._data.append(value)
            elif name == EVENT:
                self._event = value
            elif name == ERROR and self.error is None:
                self.error = value or b"{}"
        return events
