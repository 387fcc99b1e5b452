"""Security rules: no code execution of data or model output, no pickle, servers on 127.0.0.1, no printed secrets."""

import re
from pathlib import Path

import pytest

from tasks import report
from tasks.blocks import tracking
from tasks.blocks.rewards import accuracy_reward

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    r"(?<![.\w])eval\(": "eval", r"(?<![.\w])exec\(": "exec", r"\bpickle\b": "pickle", r"torch\.load\(": "torch.load",
    r"weights_only\s*=\s*False": "weights_only=False", r"yaml\.load\(": "yaml.load (use yaml.safe_load)",
    r"shell\s*=\s*True": "shell=True", r"trust_remote_code\s*=\s*True": "trust_remote_code=True",
    r"safe_serialization\s*=\s*False": "safe_serialization=False", r"0\.0\.0\.0": "binding every interface",
}


def test_the_code_never_evaluates_unpickles_or_runs_a_shell():
    found = []
    for folder in ("tasks", "flows", "scripts", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                found += [f"{path.relative_to(ROOT)}:{number}: {what}" for pattern, what in FORBIDDEN.items()
                          if re.search(pattern, line)]
    assert found == []


def test_servers_bind_to_localhost_unless_the_user_passes_a_host():
    makefile = (ROOT / "Makefile").read_text()
    assert "HOST ?= 127.0.0.1" in makefile
    for line in makefile.splitlines():
        if "--host" in line:
            assert "--host $(HOST)" in line, line


def test_a_completion_that_is_code_is_judged_never_run(tmp_path):
    marker = tmp_path / "ran"
    payload = f"__import__('os').system('touch {marker}')"
    completions = [rf"<think>x</think> \boxed{{{payload}}}", f"The answer is {payload}", f"$({payload})$"]
    assert accuracy_reward(completions, answer=["0"] * 3) == [0.0, 0.0, 0.0]
    assert not marker.exists()


@pytest.mark.parametrize("url, shown", [
    ("https://alice:s3cret@mlflow.example.com/", "https://alice:***@mlflow.example.com/"),
    ("https://ghp_TOKEN123@mlflow.example.com", "https://***@mlflow.example.com"),
    ("postgresql://mlflow:pw%40x@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
    ("https://mlflow.example.com/api?token=abc&x=1&api_key=k#/runs", "https://mlflow.example.com/api?token=***&x=1&api_key=***#/runs"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("sqlite:////tmp/store/mlflow.db", "sqlite:////tmp/store/mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
])
def test_credentials_in_urls_are_masked(url, shown):
    assert tracking.redact(url) == shown


def test_links_and_the_report_never_carry_the_tracking_credentials(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://alice:s3cret@mlflow.example.com/")
    assert tracking.tracking_uri() == "https://alice:s3cret@mlflow.example.com/"  # MLflow itself gets them
    assert tracking.ui_url() == "https://mlflow.example.com"
    assert report.provenance({}, "r1")["tracking_uri"] == "https://alice:***@mlflow.example.com/"
