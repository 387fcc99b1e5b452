"""Render the run report in headless Chromium and save a screenshot: the check that it displays with no network.

    python scripts/check_report.py                       # reports/report.html -> reports/report.png
    python scripts/check_report.py --report R --screenshot S.png --height 8000   # the whole page, taller

Chromium runs with networking-related background work off; the report has no external URL to fetch anyway (the
test suite checks that). Fails with a clear message when Chromium is not installed, or when the screenshot is not
written or is blank. tests/test_browser.py runs it on a test run's report wherever Chromium is installed (a system
package, `apt-get install chromium`, which .ci/run installs).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
MIN_PNG_BYTES = 20_000  # a blank 1280x4000 page compresses to a few kB; the report with its charts is far above


def find_browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    sys.exit("check_report: Chromium not found (looked for " + ", ".join(BROWSERS) + "); install it with "
             "`apt-get install chromium` (Debian/Ubuntu)")


def screenshot(report: Path, out: Path, browser: str, height: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--hide-scrollbars", f"--screenshot={out.resolve()}",
           f"--window-size=1280,{height}", report.resolve().as_uri()]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if result.returncode or not out.exists():
        sys.exit(f"check_report: Chromium failed (exit code {result.returncode}):\n{result.stderr[-2000:]}")
    if out.stat().st_size < MIN_PNG_BYTES:
        sys.exit(f"check_report: {out} is only {out.stat().st_size} bytes: the page rendered blank")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=Path("reports/report.html"))
    parser.add_argument("--screenshot", type=Path, default=Path("reports/report.png"))
    parser.add_argument("--height", type=int, default=4000, help="window height in pixels (the screenshot's)")
    args = parser.parse_args()
    if not args.report.exists():
        sys.exit(f"check_report: {args.report} not found; build it first with `make report`")
    screenshot(args.report, args.screenshot, find_browser(), args.height)
    print(f"rendered {args.report} -> {args.screenshot} ({args.screenshot.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
