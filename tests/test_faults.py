"""Faults at a stage's start: a corrupted input file and a tracking server that is down each stop the stage with one
message naming the file or the server, before any work (docs/operations.md, "Faults around a stage")."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.blocks import stage, tracking
from tasks.blocks.data import DataError, check_input_files
from tasks.blocks.params import load_params
from tests.workspace import make_workspace


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A throwaway copy of the repository (its dvc.yaml names each stage's inputs), as the working directory."""
    path = make_workspace(tmp_path / "repo")
    monkeypatch.chdir(path)
    return path


def truncate(file: Path, keep: float = 0.5) -> None:
    data = file.read_bytes()
    file.write_bytes(data[:int(len(data) * keep)])


def test_a_truncated_safetensors_file_or_a_half_written_jsonl_file_is_named(tmp_path, tiny):
    model = shutil.copytree(tiny, tmp_path / "model")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "a", "text": "x"}\n{"id": "b", "te')  # the writer died in the middle of line 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    check_input_files([model, empty, tmp_path / "missing.jsonl"])  # intact, empty (allowed) and missing: the stage's

    with pytest.raises(DataError, match=f"{rows}:2: broken JSON line"):
        check_input_files([model, rows])
    truncate(model / "model.safetensors")
    with pytest.raises(DataError, match=f"{model / 'model.safetensors'}: truncated or corrupted safetensors file"):
        check_input_files([model])
    (model / "model.safetensors").write_bytes(b"\x10\x00")  # cut inside the header's length
    with pytest.raises(DataError, match="model.safetensors: truncated or corrupted"):
        check_input_files([model])


def test_a_stage_with_a_corrupted_input_stops_before_any_work_and_is_not_retried(repo, tiny, tmp_path, monkeypatch):
    shutil.copytree(tiny, repo / "models" / "base")
    truncate(repo / "models" / "base" / "model.safetensors")
    report = tmp_path / "bad_input.txt"
    monkeypatch.setenv(stage.BAD_INPUT_ENV, str(report))  # what the flow reads to not retry a stage
    with (pytest.raises(DataError, match="models/base/model.safetensors: truncated"),
          stage.stage_run("evaluate@base", load_params().evaluate, "faults")):
        pytest.fail("the stage started work on a truncated model")
    assert "models/base/model.safetensors: truncated" in report.read_text()

    (repo / "data" / "toy").mkdir(parents=True)
    (repo / "data" / "toy" / "cold_start.jsonl").write_text('{"id": "a", "prompt": [], "completion": []}\n{"id": ')
    with (pytest.raises(DataError, match="data/toy/cold_start.jsonl:2: broken JSON line"),
          stage.stage_run("base_model", load_params().base_model, "faults")):
        pytest.fail("the stage started work on a half-written file")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_stage_fails_in_seconds_naming_a_tracking_server_that_is_down(repo):
    uri = f"http://bob:s3cret@127.0.0.1:{free_port()}"  # nothing listens there
    metrics = (repo / "metrics" / "base.json").read_bytes()  # the committed result of the last full run
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "tasks.evaluate", "base"], capture_output=True, text=True,
                            env={**os.environ, "MLFLOW_TRACKING_URI": uri}, timeout=120, check=False)
    elapsed = time.monotonic() - start
    assert result.returncode == 1 and elapsed < 30, (elapsed, result.stderr)
    # One line naming the server, its password redacted; no MLflow traceback, nothing evaluated.
    assert result.stderr.strip().splitlines() == [
        (f"evaluate@base: MLflow tracking server {tracking.redact(uri)} is not reachable ([Errno 111] Connection "
         "refused); start it, or point MLFLOW_TRACKING_URI at one that runs, and run again")]
    assert "s3cret" not in result.stdout + result.stderr
    assert (repo / "metrics" / "base.json").read_bytes() == metrics


STAGE = """
import subprocess, sys, time
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])  # what the stage starts
open(sys.argv[1], "w").write(f"{kid.pid}")
time.sleep(300)
"""
FLOW = """
import os, sys
from flows.pipeline import run_guarded
run_guarded([sys.executable, "-c", sys.argv[1], sys.argv[2]], dict(os.environ))
"""


def test_a_sigkilled_flow_process_leaves_no_stage_process_running(tmp_path):
    import psutil

    pids = tmp_path / "pids"
    flow = subprocess.Popen([sys.executable, "-c", FLOW, STAGE, str(pids)])
    deadline = time.monotonic() + 60
    while not pids.exists() or not pids.read_text():
        assert flow.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    stage = [p for p in psutil.Process(flow.pid).children(recursive=True)]  # the stage (and its guard), its child
    assert int(pids.read_text()) in [p.pid for p in stage]
    flow.kill()  # SIGKILL: the flow's own clean-up cannot run
    flow.wait()
    _, alive = psutil.wait_procs(stage, timeout=10)
    assert not alive, [p.cmdline() for p in alive]
