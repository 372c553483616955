"""Debian's headless Chromium driven over the Chrome DevTools Protocol: one page, its
JavaScript evaluated, keys typed, a screenshot taken. The protocol is spoken over aiohttp's
websocket client; nothing is downloaded and the browser resolves no host but 127.0.0.1."""

import asyncio
import base64
import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--window-size=1440,1000",
    # Any host but loopback resolves to nothing: the browser cannot leave the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT_S = 20.0


class BrowserError(Exception):
    """The browser did not start, or a protocol command failed."""


class Page:
    """One page target: commands sent and answered by id; console errors and uncaught
    exceptions kept in `errors`."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self.socket = socket
        self.errors: list[str] = []
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.socket:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = message.json()
            waiter = self._waiting.pop(data.get("id", -1), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(data)
            else:
                self._note(data)
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(BrowserError("the browser closed the connection"))

    def _note(self, event: dict[str, Any]) -> None:
        """Errors the page reports: exceptions, console errors, log errors (a refused script
        or style shows here); failed loads (an expected 401) are left out."""
        params = event.get("params", {})
        if event.get("method") == "Runtime.exceptionThrown":
            self.errors.append(str(params["exceptionDetails"].get("exception", params)))
        elif event.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
            self.errors.append(" ".join(str(a.get("value")) for a in params["args"]))
        elif event.get("method") == "Log.entryAdded":
            entry = params["entry"]
            if entry["level"] == "error" and entry["source"] != "network":
                self.errors.append(entry["text"])

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """One command's result."""
        command_id = next(self._ids)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = waiter
        await self.socket.send_json({"id": command_id, "method": method, "params": params})
        answer = await asyncio.wait_for(waiter, timeout=30)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (a promise is awaited)."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, *, timeout_s: float = 15.0) -> Any:
        """Poll until the expression is truthy; its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for: {expression}")
            await asyncio.sleep(0.1)

    async def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'")

    async def type_text(self, selector: str, text: str) -> None:
        """Focus a field and type into it, then press Enter."""
        await self.evaluate(f"document.querySelector({selector!r}).focus()")
        await self.send("Input.insertText", text=text)
        for kind in ("keyDown", "keyUp"):
            await self.send(
                "Input.dispatchKeyEvent",
                type=kind,
                key="Enter",
                code="Enter",
                windowsVirtualKeyCode=13,
                text="\r" if kind == "keyDown" else "",
            )

    async def screenshot(self, *, width: int) -> bytes:
        """A PNG of the whole page at this width."""
        height = int(await self.evaluate("document.documentElement.scrollHeight"))
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        result = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(result["data"])

    async def close(self) -> None:
        """Close the connection and stop reading."""
        await self.socket.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


async def debugging_port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    """The port Chromium chose, from the file it writes in its profile once it listens."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrowserError(f"chromium exited with {process.returncode}")
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().splitlines()[0])
        await asyncio.sleep(0.1)
    raise BrowserError("chromium did not open its debugging port")


def stop(process: subprocess.Popen[bytes]) -> None:
    """End the browser and its helpers (its own process group, started here)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def launch(directory: Path) -> subprocess.Popen[bytes]:
    """Start Chromium with a fresh profile in `directory`, in a process group of its own; its
    output goes to `directory/chromium.log`."""
    if not CHROMIUM.exists():
        raise BrowserError(f"{CHROMIUM} is missing: run scripts/browser.sh (Debian's chromium)")
    profile = directory / "profile"
    profile.mkdir()
    with (directory / "chromium.log").open("wb") as log:
        return subprocess.Popen(  # noqa: S603 - a fixed program and flags
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )


@asynccontextmanager
async def chromium(directory: Path) -> AsyncIterator[Page]:
    """A fresh headless Chromium (profile in `directory`) and its blank page."""
    process = launch(directory)
    try:
        port = await debugging_port(directory / "profile", process)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            address = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            socket = await session.ws_connect(address, max_msg_size=0)
            page = Page(socket)
            try:
                for domain in ("Page", "Runtime", "Log"):
                    await page.send(f"{domain}.enable")
                yield page
            finally:
                await page.close()
    finally:
        stop(process)
