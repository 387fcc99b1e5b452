"""Check in a headless Chromium that a deployment and its parameters form appear in the Prefect UI.

    python scripts/check_prefect_ui.py [--url http://127.0.0.1:4200] [--deployment r1-pipeline]

Needs a running server with the deployments served (`make prefect-server`, `make serve`) and a Chromium binary
(`apt-get install chromium`, which .ci/run installs; the test suite runs this check against a real server and skips
it without a browser). It opens the deployment's "Custom run" page, lets the single-page app render, and looks for
the deployment's name, the name of each parameter and each of the `--choices` (an option of a select) in the rendered
page. Exit code 0: all found; 1: something is missing (printed).
"""

from __future__ import annotations

import argparse
import html
import json
import shutil
import subprocess
import sys
import urllib.request

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    raise FileNotFoundError(f"no headless browser found (tried {', '.join(BROWSERS)}): apt install chromium")


def deployment_id(ui_url: str, flow_name: str, deployment_name: str) -> str:
    url = f"{ui_url}/api/deployments/name/{flow_name}/{deployment_name}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["id"]


def rendered_page(url: str, wait_ms: int = 20000) -> str:
    """The DOM of `url` after the page's scripts ran (Chromium's --dump-dom with a virtual time budget)."""
    cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--virtual-time-budget={wait_ms}", "--dump-dom", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=wait_ms / 1000 + 60, check=True).stdout


def check_deployment_form(ui_url: str, deployment: str, parameters: list[str], flow_name: str | None = None,
                          choices: list[str] = ()) -> None:
    """Raise AssertionError naming what the deployment's run form page lacks."""
    ident = deployment_id(ui_url, flow_name or deployment, deployment)
    page = rendered_page(f"{ui_url}/deployments/deployment/{ident}/run")
    missing = [text for text in (deployment, *parameters) if text not in page]
    missing += [f"the choice {name!r}" for name in choices if f'value="{html.escape(name)}"' not in page]
    assert not missing, f"the Prefect UI's run form of {deployment} does not show {missing}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:4200", help="the Prefect UI (server) address")
    parser.add_argument("--deployment", default="r1-pipeline")
    parser.add_argument("--flow", help="the flow's name (default: the deployment's)")
    parser.add_argument("--parameters", nargs="+", default=["stages", "overrides", "recipe"])
    parser.add_argument("--choices", nargs="*", default=[], help="names the form must offer in a select, e.g. "
                        "qwen2.5-math-1.5b prepare_data")
    args = parser.parse_args()
    try:
        check_deployment_form(args.url.rstrip("/"), args.deployment, args.parameters, args.flow, args.choices)
    except AssertionError as exc:
        print(exc)
        sys.exit(1)
    print(f"ok: {args.deployment} and its parameters {args.parameters} appear in the Prefect UI")


if __name__ == "__main__":
    main()
