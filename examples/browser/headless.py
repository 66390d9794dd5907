"""Open the built page in headless Chromium, wait for the training, read it, screenshot it.

    python examples/browser/headless.py [--site examples/browser/site] [--screenshot page.png]

Serves the site on 127.0.0.1 (a free port), starts Chromium (``$CHROMIUM`` or
``chromium`` / ``chromium-browser`` / ``google-chrome`` on the PATH) with the DevTools
protocol on a pipe (no extra packages), opens the page, waits until the worker has
trained, draws a test image on the pad, and prints what the page shows as JSON:
the final test accuracy, the epoch losses, the formulas' text and the prediction.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


@contextlib.contextmanager
def serve(folder: Path):
    """An HTTP server for ``folder`` on 127.0.0.1; yields its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class DevTools:
    """Chromium's DevTools protocol over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out)."""

    def __init__(self, chromium: str, profile: str):
        to_child, self._write = os.pipe()
        self._read, from_child = os.pipe()

        def fds():  # the child reads commands on fd 3 and answers on fd 4
            high = [os.dup(to_child), os.dup(from_child)]  # neither is clobbered by the other
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        flags = [
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--window-size=1200,900",
            f"--user-data-dir={profile}",
            "about:blank",
        ]
        with warnings.catch_warnings():
            # JAX, when imported, warns at every fork; the forked child only moves two
            # descriptors (fds) and execs Chromium, which takes no lock
            warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
            self.process = subprocess.Popen(
                [chromium, *flags],
                preexec_fn=fds,
                pass_fds=(3, 4),  # kept open after fds()
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        os.close(to_child)
        os.close(from_child)
        self._next, self._buffer, self.session = 0, b"", None

    def send(self, method: str, **params):
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def _receive(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.send("Page.enable")
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str, timeout: float = 120):
        """The value of ``expression`` (a promise is awaited); retried while the page loads."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.send(
                "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
            )
            if "exceptionDetails" not in result:
                return result["result"].get("value")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{expression!r} failed: {result['exceptionDetails']}")
            time.sleep(0.2)

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read)


READ_PAGE = """(async () => {
  const result = await window.symgradPage.done;
  return {
    accuracy: document.getElementById("accuracy").textContent,
    status: document.getElementById("status").dataset.state,
    losses: result.losses,
    formulas: [...document.querySelectorAll("#formulas math")].map((m) => m.textContent),
    formulaWeights: [...document.querySelectorAll("#formulas .weight")].map((m) => m.textContent),
  };
})()"""


def run(site: Path, screenshot: Path | None, pixels: list[float], epochs: int = 30) -> dict:
    """What the page shows after training (see the module docstring)."""
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError(
            "Chromium not found (set $CHROMIUM); on Debian: apt-get install chromium"
        )
    with serve(site) as url, tempfile.TemporaryDirectory(prefix="symgrad-chromium-") as profile:
        browser = DevTools(chromium, profile)
        try:
            browser.open(f"{url}index.html?epochs={epochs}")
            state = browser.evaluate(READ_PAGE, timeout=300)
            state["prediction"] = browser.evaluate(
                f"window.symgradPage.drawPixels({json.dumps(pixels)})"
            )
            state["shown"] = browser.evaluate('document.getElementById("prediction").textContent')
            if screenshot is not None:
                browser.screenshot(screenshot)
        finally:
            browser.close()
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default=str(HERE / "site"), help="the folder build.py wrote")
    parser.add_argument("--screenshot", default="", help="write a PNG of the page here")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    from sklearn.datasets import load_digits

    image = (load_digits().data[-1] / 16).tolist()  # an "8"
    state = run(
        Path(args.site), Path(args.screenshot) if args.screenshot else None, image, args.epochs
    )
    print(json.dumps(state, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
