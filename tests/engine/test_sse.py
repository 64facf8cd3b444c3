"""The lean stream's SSE decoder: events whole, however the bytes are cut."""

from __future__ import annotations

import pytest

from app.engine.sse import SSEDecoder


def decode(*reads: bytes) -> list[bytes]:
    decoder = SSEDecoder()
    return [data for read in reads for data in decoder.feed(read)]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_every_line_ending(newline: bytes) -> None:
    stream = b"data: one" + newline + newline + b"data: two" + newline + newline
    assert decode(stream) == [b"one", b"two"]
    assert decode(*(stream[i : i + 1] for i in range(len(stream)))) == [b"one", b"two"], "a byte per read"


def test_a_crlf_cut_between_reads_is_one_line_ending() -> None:
    assert decode(b"data: one\r", b"\n\r", b"\n") == [b"one"]


def test_comments_fields_and_multiline_data() -> None:
    stream = b": keep-alive\n\nevent: message\nid: 7\nretry: 10\ndata:first\ndata: second\n\ndata\n\n"
    assert decode(stream) == [b"first\nsecond", b""]


def test_an_event_without_data_or_its_blank_line_is_not_dispatched() -> None:
    assert decode(b"event: ping\n\n", b'data: {"half"') == []


def test_an_empty_read_changes_nothing() -> None:
    assert decode(b"data: one\r", b"", b"\ndata: two\n\n") == [b"one\ntwo"]
