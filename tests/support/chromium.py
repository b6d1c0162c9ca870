"""Headless Chromium driven through the DevTools protocol (CDP), for tests.

```
with Chromium() as browser:
    page = browser.new_page()
    page.navigate("http://127.0.0.1:8501/")
    page.wait_for("document.body.dataset.state === 'results'")
    page.set_file_input("#upload", "/tmp/query.png")
    ids = page.evaluate("[...document.querySelectorAll('.card')].map(c => c.dataset.id)")
```

Chromium starts with `--remote-debugging-port=0` and a temporary
`--user-data-dir`; the port it picked is read from the `DevToolsActivePort`
file it writes there. Commands go over the browser's websocket (aiohttp's
client) with flat sessions (`Target.attachToTarget`, `flatten: true`), one
per page. The API is blocking: each call runs a private asyncio loop until
its answer (or the timeout) arrives; events are not kept.
"""

import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time

import aiohttp

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class CDPError(RuntimeError):
    """A CDP command answered an error, or a page script threw."""


class Chromium:
    """A headless Chromium process and its browser-level CDP connection.

    Args:
        binary: the Chromium executable.
        window: (width, height) of new pages.
        timeout_s: seconds to wait for start-up and for each command.
    """

    def __init__(self, binary=CHROMIUM, window=(1000, 1400), timeout_s=60):
        self.binary = binary
        self.window = window
        self.timeout_s = timeout_s
        self._loop = None
        self._process = None
        self._profile = None
        self._http = None
        self._socket = None
        self._next_id = 0

    def start(self):
        """Starts Chromium and connects; stops it again on failure."""
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def _start(self):
        self._profile = tempfile.mkdtemp(prefix="chromium-cdp-")
        self._process = subprocess.Popen(
            [
                self.binary,
                *FLAGS,
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile}",
                f"--window-size={self.window[0]},{self.window[1]}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port, path = self._devtools_address()
        self._loop = asyncio.new_event_loop()
        self._run(self._connect(f"ws://127.0.0.1:{port}{path}"))
        return self

    def _devtools_address(self):
        """(port, browser websocket path) from DevToolsActivePort."""
        active = os.path.join(self._profile, "DevToolsActivePort")
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.binary} exited with {self._process.returncode} "
                    "before opening its DevTools port"
                )
            try:
                with open(active) as f:
                    lines = f.read().split("\n")
                if len(lines) >= 2 and lines[0].isdigit() and lines[1]:
                    return int(lines[0]), lines[1]
            except FileNotFoundError:
                pass
            time.sleep(0.05)
        raise TimeoutError(
            f"{self.binary} wrote no {active} within {self.timeout_s} s"
        )

    async def _connect(self, url):
        self._http = aiohttp.ClientSession()
        self._socket = await self._http.ws_connect(
            url, max_msg_size=0, timeout=aiohttp.ClientWSTimeout(ws_close=5)
        )

    def _run(self, coroutine):
        return self._loop.run_until_complete(
            asyncio.wait_for(coroutine, self.timeout_s)
        )

    async def _call(self, method, params, session_id):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session_id is not None:
            message["sessionId"] = session_id
        await self._socket.send_str(json.dumps(message))
        while True:
            reply = await self._socket.receive()
            if reply.type != aiohttp.WSMsgType.TEXT:
                raise CDPError(f"CDP connection closed during {method}")
            answer = json.loads(reply.data)
            if answer.get("id") != message["id"]:
                continue  # an event, or a late answer to a timed-out call
            if "error" in answer:
                raise CDPError(f"{method}: {answer['error']}")
            return answer.get("result", {})

    def call(self, method, session_id=None, **params):
        """Sends one CDP command and returns its result dict.

        Raises:
            CDPError: the command failed.
            TimeoutError: no answer within `timeout_s`.
        """
        return self._run(self._call(method, params, session_id))

    def new_page(self):
        """A new tab, attached with its own session."""
        target = self.call("Target.createTarget", url="about:blank")
        attached = self.call(
            "Target.attachToTarget",
            targetId=target["targetId"],
            flatten=True,
        )
        page = Page(self, attached["sessionId"])
        page.call("Page.enable")
        page.call("Runtime.enable")
        page.call(
            "Emulation.setDeviceMetricsOverride",
            width=self.window[0],
            height=self.window[1],
            deviceScaleFactor=1,
            mobile=False,
        )
        return page

    def close(self):
        """Closes the browser and removes its profile."""
        if self._socket is not None:
            try:
                self.call("Browser.close")
            except (CDPError, TimeoutError, aiohttp.ClientError):
                pass
            self._run(self._socket.close())
            self._socket = None
        if self._http is not None:
            self._run(self._http.close())
            self._http = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.close()


class Page:
    """One tab of a `Chromium`: navigation, scripts, file inputs."""

    def __init__(self, browser, session_id):
        self.browser = browser
        self.session_id = session_id

    def call(self, method, **params):
        return self.browser.call(method, session_id=self.session_id, **params)

    def evaluate(self, expression):
        """The JSON value of a script expression (promises awaited).

        Raises:
            CDPError: the script threw.
        """
        result = self.call(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get(
                "description", details.get("text")
            )
            raise CDPError(f"{expression[:80]!r} threw: {text}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout_s=30, interval_s=0.05):
        """Polls `expression` until it is truthy; returns its value.

        Raises:
            TimeoutError: still falsy after `timeout_s`; the message has
                the page's body text.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = self.evaluate(expression)
            except CDPError as e:  # Between documents while navigating.
                if "context" not in str(e).lower():
                    raise
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                body = self.evaluate(
                    "document.body ? document.body.innerText : ''"
                )
                raise TimeoutError(
                    f"{expression!r} still {value!r} after {timeout_s} s; "
                    f"page text: {str(body)[:1000]!r}"
                )
            time.sleep(interval_s)

    def navigate(self, url, timeout_s=30):
        """Loads `url` and waits until the new document is complete (the
        old window is marked first, so its own readyState does not count)."""
        self.evaluate("window.__leftByCDP = true")
        answer = self.call("Page.navigate", url=url)
        if answer.get("errorText"):
            raise CDPError(f"navigating to {url}: {answer['errorText']}")
        self.wait_for(
            "!window.__leftByCDP && document.readyState === 'complete'",
            timeout_s,
        )

    def set_file_input(self, selector, *paths):
        """Picks files in an <input type=file>, as a user would (fires
        its input and change events)."""
        document = self.call("DOM.getDocument", depth=0)
        found = self.call(
            "DOM.querySelector",
            nodeId=document["root"]["nodeId"],
            selector=selector,
        )
        if not found.get("nodeId"):
            raise CDPError(f"no element matches {selector!r}")
        self.call(
            "DOM.setFileInputFiles",
            nodeId=found["nodeId"],
            files=[os.fspath(p) for p in paths],
        )

    def screenshot(self):
        """PNG bytes of the viewport."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        return base64.b64decode(data)
