"""The live dashboard in a real browser: Debian's headless Chromium, driven by Selenium.

The demo pipeline runs in a thread with a :class:`~tidal.observe.live.LiveRun` observer and
the dashboard served on ``0.0.0.0`` (so a token is required). Chromium opens it with the
token, waits for live updates, checks the graph and the numbers against the run, saves
a screenshot (the README's ``docs/img/dashboard.png`` with
``TIDAL_SAVE_SCREENSHOT=1``), and checks that without the token the
page is refused. ``make test`` installs ``chromium`` and ``chromium-driver`` where it runs as
root on Debian; elsewhere this test is skipped, saying what to install.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidal import Executor
from tidal.apps.demo import build_demo
from tidal.observe.live import LiveRun
from tidal.observe.web.server import ObserveServer
from tidal.runtime.checkpoint import CheckpointConfig

pytestmark = pytest.mark.integration

README_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "dashboard.png"
"""Where ``TIDAL_SAVE_SCREENSHOT=1`` puts the screenshot (the README's); else under tmp_path,
so that a test run leaves the working tree as it found it."""


def _browser_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    if browser is None or driver is None:
        pytest.skip(
            "needs Debian's headless Chromium: apt-get install chromium chromium-driver "
            "(`make test` installs them when it runs as root)"
        )
    return browser, driver


@pytest.fixture
def chrome() -> Iterator[Any]:
    browser, driver_path = _browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1180", "--force-device-scale-factor=1"):  # fmt: skip
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(what: Any, timeout: float = 60.0, message: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.1)


def test_dashboard_in_chromium(chrome: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    pipeline, handles = build_demo(sensors=300, rate=15_000, keep_alerts=True)
    live = LiveRun(refresh=0.25)
    every = CheckpointConfig(data_dir=tmp_path, interval="1s")
    executor = Executor(pipeline, observer=live, handle_signals=False, checkpoint=every)
    box: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: box.update(summary=executor.run()))
    with ObserveServer(live, host="0.0.0.0", port=0, interval=0.5) as server:
        assert server.token is not None
        port = server.url.rsplit(":", 1)[1].strip("/")
        # bound to 0.0.0.0, the server asks every request for the token, wherever it comes
        # from; the browser reaches it on loopback (no test traffic leaves loopback)
        base = f"http://127.0.0.1:{port}/"
        runner.start()
        try:
            chrome.get(base + f"?token={server.token}")
            assert chrome.current_url == base  # the token went into a cookie, not the URL

            def attr(css: str, name: str) -> str:  # one script: the page redraws meanwhile
                got = chrome.execute_script(
                    "const e = document.querySelector(arguments[0]);"
                    "return e ? e.getAttribute(arguments[1]) : null;",
                    css,
                    name,
                )
                return str(got or "")

            def texts(css: str) -> list[str]:
                return list(chrome.execute_script(
                    "return [...document.querySelectorAll(arguments[0])]"
                    ".map(e => e.textContent);", css
                ))  # fmt: skip

            def graph() -> dict[str, Any]:
                return dict(chrome.execute_script(
                    "const g = document.getElementById('graph'); return {"
                    "nodes: [...g.querySelectorAll('g.node')].map(n => n.dataset.step),"
                    "edges: g.querySelectorAll('path[data-from]').length};"
                ))  # fmt: skip

            _wait(lambda: int(attr("#updated", "data-updates") or 0) >= 3, message="3 updates")
            first = int(attr("#events", "data-value"))
            _wait(lambda: int(attr("#events", "data-value")) > first, message="events to grow")
            drawn = graph()
            assert sorted(drawn["nodes"]) == sorted(pipeline.nodes)
            assert drawn["edges"] == sum(len(n.inputs) for n in pipeline.nodes.values())
            assert texts("#state") == ["running"]
            _wait(lambda: texts("#alert-list li"), timeout=90, message="an alert on the page")
            _wait(lambda: texts("#dead-list li"), message="a dead letter on the page")
            _wait(lambda: texts("#checkpoints") != ["0"], message="a checkpoint on the page")
            time.sleep(1.5)  # let the charts draw a few more points for the screenshot
            keep = os.environ.get("TIDAL_SAVE_SCREENSHOT")
            shot = README_SCREENSHOT if keep else tmp_path / "dashboard.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            assert chrome.save_screenshot(str(shot))
        finally:
            executor.stop()
            runner.join(timeout=60)
        summary = box["summary"]
        _wait(lambda: texts("#state") == ["finished"], message="the page to show the end")
        assert int(attr("#events", "data-value")) == summary.events
        assert int(attr("#dead", "data-value")) == summary.dead_letters
        for sink, n in summary.outputs.items():
            assert int(attr(f'#graph g.node[data-step="{sink}"]', "data-in")) == n, sink
        alerts = texts("#alerts")[0].replace(",", "")
        assert int(alerts) == summary.outputs["alerts"] > 0
        assert sorted(texts("#steps tbody tr td:first-child")) == sorted(pipeline.nodes)

        chrome.delete_all_cookies()  # without the token: refused
        chrome.get(base)
        assert "a token is required" in chrome.page_source
        assert not chrome.find_elements(By.ID, "graph")
        chrome.get(base + "metrics")
        assert "tidal_events_total" not in chrome.page_source
    assert shot.stat().st_size > 10_000
    assert handles is not None
