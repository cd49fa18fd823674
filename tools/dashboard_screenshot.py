"""A screenshot of `lwd dashboard` on a run directory, for the docs (docs/dashboard.png).

    .venv/bin/python tools/dashboard_screenshot.py runs/demo/deploy docs/dashboard.png

Starts the dashboard on 127.0.0.1 (a free port) in this process, opens it in headless
Chromium (Debian's /usr/bin/chromium through Playwright, as the browser test does), waits
until the page has drawn the run, and saves a PNG of the page down to the bottom of the
charts (the tables below are cut: they can be long), as a 256-colour PNG. Works on a live or a finished run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lwd.dashboard.server import DashboardConfig, DashboardThread  # noqa: E402


def screenshot(run: str, out: str, width: int = 1400, timeout_ms: int = 30_000) -> Path:
    from playwright.sync_api import sync_playwright

    with DashboardThread(DashboardConfig(run=run, port=0)) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, timeout=timeout_ms)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900}, device_scale_factor=1)
            page.set_default_timeout(timeout_ms)
            page.goto(server.url)
            drawn = "() => document.body.dataset.revision && document.querySelector('#chart-latency canvas')"
            page.wait_for_function(drawn)
            page.wait_for_timeout(300)  # let uPlot finish its first draw
            bottom = page.evaluate("() => document.querySelector('.grid').getBoundingClientRect().bottom + 10")
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=out, full_page=True, clip={"x": 0, "y": 0, "width": width, "height": bottom})
        finally:
            browser.close()
    _shrink(Path(out))
    return Path(out)


def _shrink(path: Path) -> None:
    """A 256-colour PNG: a third of the size, and the page has few colours anyway."""
    from PIL import Image  # Pillow comes with matplotlib

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="run directory of lwd deploy (e.g. runs/demo/deploy)")
    parser.add_argument("out", help="PNG to write (e.g. docs/dashboard.png)")
    parser.add_argument("--width", type=int, default=1400, help="page width in pixels")
    args = parser.parse_args()
    path = screenshot(args.run, args.out, args.width)
    print(f"{path}: {path.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
