"""A fake Cerebras upstream built for speed: a raw asyncio Protocol speaking HTTP/1.1.

`POST /v1/chat/completions` answers a Cerebras-like completion (usage, time_info), or, when the
body has `"stream": true`, 13 SSE events (role, 10 content pieces, an empty delta, a finish chunk
with usage) and `data: [DONE]`, sent with chunked transfer encoding. `GET /v1/models` answers a
small list. Keep-alive and pipelined requests are answered in order.

    python -m bench.upstream --port 9100 [--latency-ms 0]
"""

import argparse
import asyncio
import contextlib
import itertools
import re
import time
from collections import deque
from typing import Any, cast

import orjson

MODEL = "gpt-oss-120b"
PIECES = ("Hello", " there", "!", " How", " can", " I", " help", " you", " today", "?")
PROMPT_TOKENS = 12
MAX_HEADER_BYTES = 64 * 1024
MODELS = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 1721692800, "owned_by": "Cerebras"}
            for m in (MODEL, "zai-glm-4.7", "llama3.1-8b")
        ],
    }
)
NOT_FOUND = b'{"message":"Not found","type":"not_found_error","param":"","code":"not_found"}'
BAD_REQUEST = b'{"message":"Bad request","type":"invalid_request_error","param":"","code":null}'
ID_MARK = b"~~reply~id~~"  # as long as the 12 hex digits that replace it (chunk sizes)
_ids = itertools.count(1)


class Replies:
    """Pre-rendered reply bodies: only the id (per reply) and the time (per second) change."""

    def __init__(self) -> None:
        self.second = -1
        self.cache: dict[tuple[bytes, bool], list[bytes]] = {}

    def body(self, model: bytes, stream: bool) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second, self.cache = now, {}
        parts = self.cache.get((model, stream))
        if parts is None:
            text = json_string(model)
            rendered = sse_body(text, now) if stream else orjson.dumps(completion(text, now))
            parts = self.cache[(model, stream)] = list(rendered.split(ID_MARK))
        return (b"%012x" % next(_ids)).join(parts)


def json_string(raw: bytes) -> str:
    """The text of a JSON string literal's inside (escapes resolved)."""
    try:
        value = orjson.loads(b'"' + raw + b'"')
    except orjson.JSONDecodeError:
        return MODEL
    return value if isinstance(value, str) else MODEL


def completion(model: str, now: int) -> dict[str, Any]:
    """A non-streaming completion as Cerebras sends it (the id is filled in per reply)."""
    return {
        "id": "chatcmpl-~~reply~id~~",
        "choices": [
            {
                "finish_reason": "stop",
                "index": 0,
                "message": {"role": "assistant", "content": "".join(PIECES)},
            }
        ],
        "created": now,
        "model": model,
        "system_fingerprint": "fp_bench",
        "object": "chat.completion",
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": len(PIECES),
            "total_tokens": PROMPT_TOKENS + len(PIECES),
            "prompt_tokens_details": {"cached_tokens": 0},
        },
        "time_info": {
            "queue_time": 0.000091,
            "prompt_time": 0.0008,
            "completion_time": 0.004,
            "total_time": 0.0061,
            "created": now + 0.5,
        },
    }


def stream_chunks(model: str, now: int) -> list[dict[str, Any]]:
    """The 13 chunks of a streamed completion: role, 10 pieces, empty delta, finish + usage."""
    head: dict[str, Any] = {
        "id": "chatcmpl-~~reply~id~~",
        "created": now,
        "model": model,
        "system_fingerprint": "fp_bench",
        "object": "chat.completion.chunk",
    }
    deltas: list[dict[str, Any]] = [{"role": "assistant"}, *({"content": p} for p in PIECES), {}]
    chunks: list[dict[str, Any]] = [{**head, "choices": [{"delta": d, "index": 0}]} for d in deltas]
    usage = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": len(PIECES),
        "total_tokens": PROMPT_TOKENS + len(PIECES),
    }
    final = {"delta": {}, "finish_reason": "stop", "index": 0}
    time_info = {"queue_time": 0.000091, "total_time": 0.0061, "created": now + 0.5}
    chunks.append({**head, "choices": [final], "usage": usage, "time_info": time_info})
    return chunks


def sse_body(model: str, now: int) -> bytes:
    """The chunked body of the event stream: one HTTP chunk per SSE event, then `[DONE]`."""
    events = [b"data: " + orjson.dumps(c) + b"\n\n" for c in stream_chunks(model, now)]
    events.append(b"data: [DONE]\n\n")
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


def response(status: bytes, body: bytes, *, close: bool, stream: bool = False) -> bytes:
    """A complete response: a JSON body, or a chunked event stream."""
    connection = b"connection: close\r\n" if close else b""
    if stream:
        framing = b"content-type: text/event-stream\r\ncache-control: no-cache\r\n"
        framing += b"transfer-encoding: chunked\r\n"
    else:
        framing = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    return b"HTTP/1.1 " + status + b"\r\n" + framing + connection + b"\r\n" + body


MODEL_FIELD = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.)*)"')
STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')
REPLIES = Replies()


def chat_response(body: bytes, *, close: bool) -> bytes:
    """The answer to a chat completion request body (scanned, not parsed, for speed)."""
    body = body.strip()
    if not body.startswith(b"{") or not body.endswith(b"}"):
        return response(b"400 Bad Request", BAD_REQUEST, close=close)
    found = MODEL_FIELD.search(body)
    model = found.group(1) if found else MODEL.encode()
    stream = STREAM_TRUE.search(body) is not None
    return response(b"200 OK", REPLIES.body(model, stream), close=close, stream=stream)


def answer(method: bytes, path: bytes, body: bytes, *, close: bool) -> bytes:
    """Route one request."""
    path = path.split(b"?", 1)[0]
    if method == b"POST" and path == b"/v1/chat/completions":
        return chat_response(body, close=close)
    if method == b"GET" and path == b"/v1/models":
        return response(b"200 OK", MODELS, close=close)
    return response(b"404 Not Found", NOT_FOUND, close=close)


def chunked_body(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked request body at `start`: (body, end offset), or None if incomplete."""
    parts: list[bytes] = []
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        if size == 0:
            end = buf.find(b"\r\n\r\n", eol)
            return (b"".join(parts), end + 4) if end >= 0 else None
        if len(buf) < eol + 2 + size + 2:
            return None
        parts.append(bytes(buf[eol + 2 : eol + 2 + size]))
        pos = eol + 2 + size + 2


def header(head: bytes, name: bytes) -> bytes:
    """The value of header `name` in a lower-cased request head, or b"" when absent."""
    at = head.find(b"\r\n" + name + b":")
    if at < 0:
        return b""
    start = at + len(name) + 3
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip()


class Upstream(asyncio.Protocol):
    """One client connection: parse requests as they come, answer them in order."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending: deque[list[Any]] = deque()
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while not self.closing and (request := self.next_request()) is not None:
            method, path, body, close = request
            reply = answer(method, path, body, close=close)
            self.closing = close
            if self.latency_s > 0:
                slot: list[Any] = [False, reply, close]
                self.pending.append(slot)
                asyncio.get_running_loop().call_later(self.latency_s, self.release, slot)
            else:
                self.send(reply, close)
        if len(self.buf) > MAX_HEADER_BYTES and self.buf.find(b"\r\n\r\n") < 0:
            self.send(response(b"431 Too Large", BAD_REQUEST, close=True), True)

    def next_request(self) -> tuple[bytes, bytes, bytes, bool] | None:
        """Take one complete request off the buffer, or None if it is not all here yet."""
        buf = self.buf
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = bytes(buf[:head_end]).lower()
        line_end = head.find(b"\r\n")
        request_line = bytes(buf[: line_end if line_end >= 0 else head_end]).split(b" ")
        method, path, version = (*request_line, b"/", b"")[:3]
        close = header(head, b"connection") == b"close" or version == b"HTTP/1.0"
        start = head_end + 4
        if header(head, b"transfer-encoding") == b"chunked":
            decoded = chunked_body(buf, start)
            if decoded is None:
                return None
            body, end = decoded
        else:
            end = start + int(header(head, b"content-length") or b"0")
            if len(buf) < end:
                return None
            body = bytes(buf[start:end])
        del buf[:end]
        return method, path, body, close

    def release(self, slot: list[Any]) -> None:
        """A delayed answer is due: send every answer at the head of the queue that is due."""
        slot[0] = True
        while self.pending and self.pending[0][0]:
            _, response, close = self.pending.popleft()
            self.send(response, close)

    def send(self, response: bytes, close: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(response)
        if close:
            self.transport.close()
            self.transport = None


async def serve(host: str, port: int, latency_ms: float) -> None:
    """Serve until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Upstream(latency_ms / 1000), host, port, backlog=4096, reuse_address=True
    )
    print(f"fake upstream on http://{host}:{port} (latency {latency_ms} ms)", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="fast fake Cerebras upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay before answering")
    args = parser.parse_args()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(serve(args.host, args.port, args.latency_ms))


if __name__ == "__main__":
    main()
