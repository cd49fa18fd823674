"""The dashboard in a real headless browser: Playwright drives Debian's Chromium against a
real `lwd dashboard` server (uvicorn in a thread, 127.0.0.1, a free port) on a synthetic
run directory, and new episodes are appended while the page polls.

Needs `playwright` (the `dev` extra) and /usr/bin/chromium (`apt-get install chromium`,
which `.ci/run` does). Missing either fails the test with the fix: a browser test that
silently skips would let the page break unnoticed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lwd.dashboard.server import DashboardConfig, DashboardThread
from tests.dashboard.synthetic import build_gated_run

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 15_000  # every wait is bounded; a poll is 0.3 s here


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[dev]' (no `playwright install` needed)")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, timeout=TIMEOUT_MS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.slow
def test_page_shows_the_run_and_follows_new_episodes(tmp_path, browser):
    from playwright.sync_api import expect

    run = build_gated_run(tmp_path, time.time() - 90)
    with DashboardThread(DashboardConfig(run=str(tmp_path), port=0, poll_seconds=0.3)) as server:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        errors: list[str] = []
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(server.url)

        # the run as it is: status, robots, versions with gate decisions, success
        expect(page.get_by_test_id("run-status")).to_have_text("live")
        expect(page.locator("#stat-episodes")).to_have_text("40")
        expect(page.locator("#robots-table tbody tr")).to_have_count(4)
        canary_robot = page.locator('#robots-table tr[data-robot-id="robot-003"]')
        expect(canary_robot).to_contain_text("v4")
        expect(canary_robot).to_contain_text("canary")
        expect(page.locator('#robots-table tr[data-robot-id="robot-000"]')).to_contain_text("reach-v3")
        expect(page.locator("#versions-table tbody tr")).to_have_count(4)
        expect(page.locator('#versions-table tr[data-version="3"]')).to_contain_text("rejected")
        expect(page.locator('#versions-table tr[data-version="2"]')).to_contain_text("deployed")
        expect(page.locator("#stat-deployed-version")).to_have_text("v2 (canary v4)")
        expect(page.locator("#decisions-table tbody tr")).to_have_count(4)
        expect(page.locator("#decisions-table")).to_contain_text("worse than v2")
        expect(page.locator("#stat-fleet-success")).to_have_text("75.0%")
        expect(page.locator('#tasks-table tr[data-task="push-v3"]')).to_contain_text("50.0%")
        for chart in ("success", "interventions", "fleet", "timeline", "validation", "throughput", "latency"):
            expect(page.locator(f"#chart-{chart} canvas")).to_have_count(1)
        assert page.evaluate("() => charts['chart-success'].plot.data[0].length") == 40

        # new episodes arrive: the numbers and the charts follow
        for k in range(20):
            run.episode(f"robot-{k % 4:03d}", "push-v3", 2, True, ended_at=time.time())
        expect(page.locator("#stat-episodes")).to_have_text("60")
        expect(page.locator('#tasks-table tr[data-task="push-v3"]')).to_contain_text("100.0%")
        expect(page.locator('#robots-table tr[data-robot-id="robot-000"] td').nth(6)).to_have_text("15")
        page.wait_for_function("() => charts['chart-success'].plot.data[0].length === 60")

        # the run ends, then the server goes away: the page says so and keeps the numbers
        run.summary("budget")
        expect(page.get_by_test_id("run-status")).to_have_text("finished (budget)")
        server.stop()
        expect(page.get_by_test_id("connection")).to_contain_text("server unreachable")
        expect(page.locator("#stat-episodes")).to_have_text("60")
        page.close()
    # failed polls after the stop log network errors; anything else is a bug in the page
    assert [e for e in errors if "Failed to fetch" not in e and "ERR_CONNECTION_REFUSED" not in e] == []
