"""A small Chrome DevTools Protocol client over --remote-debugging-pipe (no websocket needed)."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)


def find_chromium() -> str | None:
    """Path of a Chromium binary on PATH, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class CdpError(Exception):
    """A DevTools command answered with an error, or a page condition never came true."""


class Browser:
    """One headless Chromium and one page, driven by DevTools commands over two pipes."""

    def __init__(self, chromium: str, timeout: float = 20.0) -> None:
        self.timeout = timeout
        self._profile = tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire_pipes() -> None:  # Chromium reads commands on fd 3, writes replies on fd 4
            high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4
            high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.process = subprocess.Popen(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self._profile.name}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),  # kept open by close_fds, which runs after wire_pipes
            preexec_fn=wire_pipes,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buffer = b""
        self._next_id = 0
        self.session = ""
        target = self.command("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.command(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            session=False,
        )
        self.session = attached["sessionId"]
        self.command("Page.enable")
        self.command("Runtime.enable")

    def close(self) -> None:
        """End Chromium and remove its profile."""
        for fd in (self._to_chrome, self._from_chrome):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._profile.cleanup()

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise CdpError("no reply from Chromium in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise CdpError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def command(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = True
    ) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are dropped)."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") != self._next_id:
                continue
            if "error" in reply:
                raise CdpError(f"{method}: {reply['error']}")
            result: dict[str, Any] = reply.get("result", {})
            return result

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.command(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        """Open a URL and wait until its document has loaded."""
        self.command("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    def wait_for(self, condition: str, what: str = "") -> Any:
        """Poll a JavaScript condition until it is truthy; its value, or CdpError at the deadline."""
        deadline = time.monotonic() + self.timeout
        while True:
            value = self.evaluate(
                f"(() => {{ try {{ const v = {condition}; return v instanceof Node ? true : v; }}"
                " catch (e) { return null; } })()"
            )
            if value:
                return value
            if time.monotonic() > deadline:
                shown = self.text("#toast")  # the UI's last message, often the reason
                raise CdpError(f"timed out waiting for {what or condition}; UI said {shown!r}")
            time.sleep(0.1)

    def fill(self, selector: str, values: dict[str, str]) -> None:
        """Type values into the named fields of the form matched by selector."""
        self.evaluate(
            f"(() => {{ const f = document.querySelector({json.dumps(selector)});"
            f" for (const [k, v] of Object.entries({json.dumps(values)})) {{"
            ' const input = f.querySelector(`[name="${k}"]`); input.value = v;'
            " input.dispatchEvent(new Event('input', {bubbles: true}));"
            " input.dispatchEvent(new Event('change', {bubbles: true})); } })()"
        )

    def click(self, selector: str) -> None:
        """Click the first element matched by selector (it must exist)."""
        found = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return false; e.click(); return true; })()"
        )
        if not found:
            raise CdpError(f"nothing matches {selector}")

    def submit(self, selector: str) -> None:
        """Submit the form matched by selector as its submit button would."""
        self.click(f"{selector} button[type=submit]")

    def text(self, selector: str) -> str:
        """The text of the first element matched by selector ('' when none)."""
        value = self.evaluate(
            f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || ''"
        )
        return str(value)

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the whole page at path and return it."""
        data = self.command(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        path.write_bytes(base64.b64decode(data["data"]))
        return path
