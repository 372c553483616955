"""The pass-through floor: the least any gateway must do, as the benchmark's `floor` row.

A bare ASGI callable on uvicorn (httptools, uvloop, no access log) and one shared aiohttp
session to the upstream: it checks the caller's bearer key (401 otherwise), forwards the
request body to the same path on the upstream with the upstream's key, and relays the
upstream's status, content type and bytes: a whole answer with its length, a stream's chunks as
they are read. No parsing, no schema, no error mapping, no logging: every gateway row is shown
between the direct call and this one, and as a fraction of it.

    python -m bench.floor --port 9200 --upstream http://127.0.0.1:9100 --key sk-bench-...
"""

import argparse
from typing import Any

import aiohttp
import uvicorn

UNAUTHORIZED = b'{"error":{"message":"Invalid key","type":"invalid_request_error","code":null}}'
JSON = b"application/json"


class Floor:
    """The ASGI application: lifespan opens and closes the session; every request is relayed."""

    def __init__(self, upstream: str, key: str, upstream_key: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.bearer = b"Bearer " + key.encode()
        self.upstream_headers = {
            "authorization": f"Bearer {upstream_key}",
            "content-type": "application/json",
        }
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if (b"authorization", self.bearer) not in scope["headers"]:
            await send(
                {"type": "http.response.start", "status": 401, "headers": [(b"content-type", JSON)]}
            )
            await send({"type": "http.response.body", "body": UNAUTHORIZED})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        assert self.session is not None  # noqa: S101 - opened at start-up
        url = self.upstream + scope["path"]
        async with self.session.post(url, data=body, headers=self.upstream_headers) as upstream:
            headers = [(b"content-type", upstream.headers.get("content-type", "").encode())]
            if upstream.content_length is not None:  # a whole answer: one write, with its length
                data = await upstream.read()
                headers.append((b"content-length", b"%d" % len(data)))
                await send(
                    {"type": "http.response.start", "status": upstream.status, "headers": headers}
                )
                await send({"type": "http.response.body", "body": data})
                return
            await send(
                {"type": "http.response.start", "status": upstream.status, "headers": headers}
            )
            async for data in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    async def lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=0)
                self.session = aiohttp.ClientSession(connector=connector)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    parser = argparse.ArgumentParser(description="the benchmark's pass-through floor")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the upstream's base URL")
    parser.add_argument("--key", required=True, help="the bearer key callers must send")
    parser.add_argument("--upstream-key", default="csk-bench-upstream-key")
    args = parser.parse_args()
    app = Floor(args.upstream, args.key, args.upstream_key)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        http="httptools",
        loop="uvloop",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )


if __name__ == "__main__":
    main()
