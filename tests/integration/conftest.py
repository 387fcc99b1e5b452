"""A temporary copy of the repository, smoke-sized, in which tests run the real pipeline."""

import os
import sys
from pathlib import Path

import pytest
import yaml

from tests.workspace import make_workspace

SMOKE = Path(__file__).with_name("smoke.yaml")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    path = make_workspace(tmp_path / "repo", yaml.safe_load(SMOKE.read_text()))
    monkeypatch.chdir(path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}/mlflow.db")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return path


@pytest.fixture(scope="session")
def prefect_harness():
    """One ephemeral Prefect server for the whole session (it needs ~10 s to start on 2 cores)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
