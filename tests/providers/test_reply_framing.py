"""The pure parts of reading a reply within limits: inflating in bounded slices, counting an
event's bytes, splitting a block of events."""

import os
import zlib

import httpx
import pytest

from ai_gateway.errors import UpstreamResponseTooLarge
from ai_gateway.providers.bounded_transport import (
    INFLATE_STEP,
    EventBudget,
    Inflater,
    declared_length,
)
from ai_gateway.providers.wire import event_payloads

# Incompressible bytes, then a long run that inflates far past one slice per input byte.
RAW = os.urandom(100_000) + bytes(3 * INFLATE_STEP) + b"end"


def compressed(wbits: int) -> bytes:
    """RAW compressed as gzip (31), zlib (15) or raw deflate (-15), with trailing junk."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return compressor.compress(RAW) + compressor.flush() + b"junk after the end"


@pytest.mark.parametrize(
    ("encoding", "wbits"), [("gzip", 31), ("x-gzip", 31), ("deflate", 15), ("deflate", -15)]
)
@pytest.mark.parametrize("read_size", [1, 5, 4096, 10**9])
def test_inflating_gives_the_body_in_bounded_slices_however_it_is_read(
    encoding: str, wbits: int, read_size: int
) -> None:
    body = compressed(wbits)
    inflater = Inflater(encoding)
    assert list(inflater.pieces(b"")) == []  # an empty first read decides nothing

    pieces = [
        piece
        for at in range(0, len(body), read_size)
        for piece in inflater.pieces(body[at : at + read_size])
    ]

    assert b"".join(pieces) == RAW
    assert max(map(len, pieces)) <= INFLATE_STEP


def test_inflating_corrupt_data_raises_zlib_error() -> None:
    with pytest.raises(zlib.error):
        list(Inflater("gzip").pieces(b"\x1f\x8b\x08\x00 not gzip at all"))


@pytest.mark.parametrize(
    ("reads", "is_within"),
    [
        ([b"data: " + b"x" * 90], False),
        ([b"data: " + b"x" * 40 + b"\n\n", b"data: " + b"y" * 60 + b"\n\n"], True),
        ([b"data: " + b"x" * 40 + b"\n", b"\ndata: " + b"y" * 60], True),
        ([b"data: " + b"x" * 40 + b"\r\n\r", b"\ndata: " + b"y" * 60], True),
        ([b"data: " + b"x" * 40 + b"\r", b"\rdata: " + b"y" * 60], True),
        ([b"data: " + b"x" * 40 + b"\n", b"data: " + b"y" * 60], False),
    ],
    ids=["one-long", "two-events", "lf-split", "crlf-split", "cr-split", "one-line-each"],
)
def test_an_event_budget_counts_bytes_since_the_last_event_ended(
    reads: list[bytes], is_within: bool
) -> None:
    budget = EventBudget(80)

    assert all(budget.spend(read) for read in reads) is is_within


@pytest.mark.parametrize(("value", "length"), [("12", 12), ("twelve", 0), (None, 0)])
def test_declared_length_reads_the_header_or_gives_zero(value: str | None, length: int) -> None:
    headers = {} if value is None else {"content-length": value}

    assert declared_length(httpx.Response(200, headers=headers)) == length


def test_a_block_of_many_small_events_over_the_limit_is_read() -> None:
    block = b"data: 1\n\n" * 20

    assert list(event_payloads(block, provider="groq", limit=50)) == [b"1"] * 20


def test_one_event_of_a_block_over_the_limit_is_a_502() -> None:
    block = b"data: 1\n\ndata: " + b"2" * 60 + b"\n\n"

    with pytest.raises(UpstreamResponseTooLarge):
        list(event_payloads(block, provider="groq", limit=50))


def test_a_block_keeps_only_data_lines_and_joins_them() -> None:
    block = b": note\r\nevent: x\r\ndata: a\r\ndata:b\r\n\r\nid: 1\n\ndata: c\r\rdata: d\n\n"

    assert list(event_payloads(block, provider="groq", limit=100)) == [b"a\nb", b"c", b"d"]
