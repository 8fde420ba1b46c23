"""A real browser opens each Space: headless Chromium (Debian's ``chromium`` package,
installed by ``.ci/install_browser.sh``) loads the page, waits until the app has filled
its outputs, and saves a screenshot.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``),
so no driver package is needed. ``HF_FAITHFUL_SCREENSHOT_DIR=docs/images`` also copies
the screenshots there (that is how the README's images are made).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image, ImageStat
from spaces_utils import launched

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None
)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="chromium is not on PATH (run .ci/install_browser.sh)"
    ),
]


class Chromium:
    """Headless Chromium with one page, driven over the DevTools pipe (fds 3 and 4)."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # in the child: DevTools reads fd 3, writes fd 4
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--remote-debugging-pipe",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            pass_fds=(3, 4),
            preexec_fn=wire_pipes,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._ids = itertools.count(1)
        self._buffer = b""
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.size = (width, height)

    def send(self, method: str, session: str | None = None, **params) -> dict:
        message_id = next(self._ids)
        message = {"id": message_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium closed the DevTools pipe during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str):
        result = self.send(
            "Runtime.evaluate", self.session, expression=expression, returnByValue=True
        )
        return result["result"].get("value")

    def screenshot(self, url: str, path: Path, ready_js: str, timeout: float = 240.0) -> Path:
        """Open ``url``, wait until ``ready_js`` is true (plus a moment to paint), save a
        full-page PNG to ``path``."""
        self.send("Page.enable", self.session)
        self.send("Page.navigate", self.session, url=url)
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"Boolean({ready_js})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"page {url} not ready after {timeout:.0f}s: {ready_js}")
            time.sleep(0.5)
        time.sleep(1.5)
        height = int(self.evaluate("document.documentElement.scrollHeight"))
        self.send(
            "Emulation.setDeviceMetricsOverride",
            self.session,
            width=self.size[0],
            height=max(height, self.size[1]),
            deviceScaleFactor=1,
            mobile=False,
        )
        time.sleep(0.5)
        data = self.send("Page.captureScreenshot", self.session, format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except RuntimeError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._to_browser)
        os.close(self._from_browser)


def _check_and_keep(path: Path, name: str) -> None:
    image = Image.open(path).convert("RGB")
    assert image.width >= 1000 and image.height >= 600, image.size
    # a rendered app, not a blank page: many colours and real contrast
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 200
    assert max(hi - lo for lo, hi in ImageStat.Stat(image).extrema) > 150
    keep = os.environ.get("HF_FAITHFUL_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / f"{name}.png")


@pytest.fixture
def browser():
    chromium = Chromium()
    yield chromium
    chromium.close()


def test_pruning_explorer_in_a_browser(browser, tmp_path):
    with launched("pruning_explorer") as (app, demo):
        app.prune_reference(app.DEFAULT_SPARSITY, app.DEFAULT_STEPS, "both")  # warm the cache
        prompt = json.dumps(app.DEFAULT_PROMPT)
        ready = (  # both generations shown (they continue the prompt), perplexity measured
            "[...document.querySelectorAll('textarea')].filter(t => t.value.startsWith("
            f"{prompt}) && t.value.length > {prompt}.length).length == 2"
            " && document.body.innerText.includes('WikiText-2 test')"
        )
        path = browser.screenshot(demo.local_url, tmp_path / "page.png", ready)
    _check_and_keep(path, "pruning_explorer")


def test_faithfulness_inspector_in_a_browser(browser, tmp_path):
    with launched("faithfulness_inspector") as (app, demo):
        app.get_backend(app.REFERENCE)  # build the model before the page asks for it
        ready = "document.body.innerText.includes('Answer changed under')"
        path = browser.screenshot(demo.local_url, tmp_path / "page.png", ready)
    _check_and_keep(path, "faithfulness_inspector")
