"""Checks in a real headless browser: the run report renders offline (scripts/check_report.py). The Prefect UI's
run form is checked in tests/integration/test_orchestration.py, against a real server. Both need Chromium, which
.ci/run installs (`apt-get install chromium`); without it they are skipped, saying so."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.check_report import BROWSERS
from tests.test_report import built  # noqa: F401  (the fixture: a small finished run's report)

ROOT = Path(__file__).resolve().parents[1]
needs_chromium = pytest.mark.skipif(not any(shutil.which(name) for name in BROWSERS),
                                    reason="no headless Chromium (apt-get install chromium; .ci/run installs it)")


@needs_chromium
def test_the_report_renders_in_chromium_with_its_charts(built, tmp_path):  # noqa: F811
    page = built["root"] / "reports" / "report.html"
    screenshot = tmp_path / "report.png"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_report.py"), "--report", str(page),
                             "--screenshot", str(screenshot)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert screenshot.stat().st_size > 20_000
