"""A temporary copy of the repository, smoke-sized, in which tests run the real pipeline."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.params import apply_overrides, read_yaml

ROOT = Path(__file__).resolve().parents[2]
SMOKE = Path(__file__).with_name("smoke.yaml")


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_workspace(dest: Path, overrides: dict | None = None) -> Path:
    """Copy the tracked files of the repository into `dest` as a fresh git + DVC repo with smoke params."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    raw = apply_overrides(read_yaml(ROOT / "params.yaml"), {**yaml.safe_load(SMOKE.read_text()), **(overrides or {})})
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    git("init", "-q", cwd=dest)
    git("-c", "user.name=test", "-c", "user.email=test@example.invalid", "add", "-A", cwd=dest)
    git("-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-qm", "smoke", cwd=dest)
    return dest


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    path = make_workspace(tmp_path / "repo")
    monkeypatch.chdir(path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}/mlflow.db")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}")
    return path


@pytest.fixture(scope="session")
def prefect_harness():
    """One ephemeral Prefect server for the whole session (it needs ~10 s to start on 2 cores)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
