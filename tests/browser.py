"""A headless Chromium (Debian's `chromium`, scripts/install_chromium.sh) driven over the Chrome DevTools Protocol,
for the tests that open a page asrflow writes as a user would: scripts run, images decode, nothing is fetched.

The protocol runs over a pipe (--remote-debugging-pipe: JSON messages separated by NUL bytes on file descriptors 3
and 4), so no port is opened and no client library is needed. Every host name resolves to nothing
(--host-resolver-rules), and `requests` records each URL the page asked for, so a test can assert the page is
self-contained.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

BINARY = "chromium"
INSTALL = "bash scripts/install_chromium.sh (apt-get install chromium)"


class BrowserError(RuntimeError):
    pass


def executable() -> str:
    """The Chromium binary; an error that says how to install it (tests must fail, not skip, without it)."""
    path = shutil.which(BINARY)
    if path is None:
        raise BrowserError(f"no `{BINARY}` on PATH: install it with {INSTALL}")
    return path


class Chromium:
    """One headless Chromium with one page (a tab), driven over CDP. Use as a context manager."""

    def __init__(self, width: int = 1400, height: int = 1000, timeout: float = 60) -> None:
        self.timeout = timeout
        self.requests: list[str] = []
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict[str, Any]] = []
        self._profile = tempfile.mkdtemp(prefix="asrflow-chromium-")
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        args = [
            executable(),
            "--headless",
            "--no-sandbox",  # containers and CI runners run as root, where Chromium's sandbox cannot start
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any host name fails to resolve
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]

        def pipes_as_3_and_4() -> None:  # where --remote-debugging-pipe reads commands and writes replies
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(3, 4),
            preexec_fn=pipes_as_3_and_4,
        )
        os.close(to_browser)
        os.close(from_browser)
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable", session=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self.send("Browser.close")
            except BrowserError:
                pass
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    # --- the protocol ---------------------------------------------------------------------------------------------

    def send(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one command (to the page's session when `session`), wait for its reply and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def _receive(self) -> dict[str, Any]:
        """The next message; events are recorded (and requested URLs noted) on the way."""
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._read], [], [], max(left, 0))
            chunk = os.read(self._read, 1 << 20) if ready else b""
            if not chunk:
                stderr = (
                    self._process.stderr.read().decode(errors="replace") if self._process.poll() is not None else ""
                )
                raise BrowserError(
                    f"chromium did not answer within {self.timeout:.0f} s{': ' + stderr if stderr else ''}"
                )
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
            self._events.append(message)
        return message

    def _wait_event(self, method: str) -> dict[str, Any]:
        while True:
            for i, event in enumerate(self._events):
                if event["method"] == method:
                    return self._events.pop(i)
            self._receive()

    # --- what a test does -----------------------------------------------------------------------------------------

    def open(self, path: Path) -> None:
        """Load a local file and wait for its load event (its scripts have run by then). `requests` starts afresh."""
        self._events.clear()
        self.requests.clear()
        self.send("Page.navigate", session=True, url=path.resolve().as_uri())
        self._wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited); a thrown error fails."""
        result = self.send(
            "Runtime.evaluate", session=True, expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}…: {result['exceptionDetails']}")
        return result["result"].get("value")

    def frame_evaluate(self, url_prefix: str, expression: str, timeout: float = 30) -> Any:
        """The value of `expression` in the page's frame whose address starts with `url_prefix` (an iframe, once it
        has loaded: waits up to `timeout` seconds for it)."""
        deadline = time.monotonic() + timeout
        while True:
            frames = [self.send("Page.getFrameTree", session=True)["frameTree"]]
            found = None
            while frames and found is None:
                node = frames.pop()
                if node["frame"]["url"].startswith(url_prefix):
                    found = node["frame"]["id"]
                frames += node.get("childFrames", [])
            contexts = [
                event["params"]["context"]["id"]
                for event in self._events
                if event["method"] == "Runtime.executionContextCreated"
                and event["params"]["context"]["auxData"].get("frameId") == found
                and event["params"]["context"]["auxData"].get("isDefault")
            ]
            if contexts:
                break
            if time.monotonic() > deadline:
                raise BrowserError(f"no loaded frame at {url_prefix}… within {timeout:.0f} s")
            time.sleep(0.2)
        result = self.send(
            "Runtime.evaluate",
            session=True,
            expression=expression,
            contextId=contexts[-1],
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}…: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """Evaluate `expression` until it is truthy (a page that renders with scripts after its load event)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.2)

    def screenshot(self, target: Path) -> Path:
        """The page as rendered now, as a PNG at `target`."""
        data = self.send("Page.captureScreenshot", session=True, format="png")["data"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(base64.b64decode(data))
        return target

    def remote_requests(self) -> list[str]:
        """Every URL the page asked for that is not local (file:, data:, blob:, about:, chrome internals)."""
        local = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-extension:", "devtools:")
        return [url for url in self.requests if not url.startswith(local)]
