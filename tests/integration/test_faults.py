"""A real MLflow tracking server (`mlflow server` on 127.0.0.1, started and stopped by PID) that dies in the middle of
a training stage run by DVC: the stage saves its work and fails with one message, a re-run while the server is down
fails in seconds naming it, and a re-run once it is back resumes from the final checkpoint with the same weights."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tasks import prepare_data
from tasks.blocks.params import Params, ToyWorldParams, apply_overrides, read_yaml
from tests.integration.test_orchestration import free_port, wait_for, wait_healthy

pytestmark = pytest.mark.slow

STEPS = 32  # 16 rows, batch 2, 4 epochs
OVERRIDES = {"cold_start_sft.model": "models/start", "cold_start_sft.data": "data/start/cold_start.jsonl",
             "cold_start_sft.epochs": 4.0, "cold_start_sft.batch_size": 2, "cold_start_sft.save_steps": 4,
             "tracking.experiment": "faults"}
TOY = ToyWorldParams(train_size=40, test_size=4, dev_size=4, cold_start_size=16, sampling_pool_size=8, corpus_size=40,
                     arithmetic_docs=4, general_docs=2, facts=4, general_test_size=2,
                     harmful_requests=4, harmful_test_size=2,
                     lookalike_test_size=2)


@contextmanager
def mlflow_server(root: Path, port: int):
    """`mlflow server` on 127.0.0.1:port over a store in `root` (kept across restarts); yields the process."""
    log = (root / f"server-{time.monotonic_ns()}.log").open("w")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: 7 processes fewer to start
    process = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                                "--workers", "1", "--backend-store-uri", f"sqlite:///{root}/server.db",
                                "--default-artifact-root", str(root / "artifacts")],
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(process, f"http://127.0.0.1:{port}/health", Path(log.name), "the MLflow server")
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def complete_checkpoints(path: Path) -> list[int]:
    return sorted(int(c.parent.name.split("-")[1]) for c in path.glob("checkpoint-*/trainer_state.json"))


def repro(env: dict) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    result = subprocess.run(["dvc", "repro", "cold_start_sft"], capture_output=True, text=True, env=env, timeout=300,
                            check=False)
    return result, time.monotonic() - start


def test_a_tracking_server_that_dies_mid_training_loses_no_training(workspace, tiny, tmp_path):
    shutil.copytree(tiny, workspace / "models" / "start")
    prepare_data.run("prepare_data", TOY, Params(), workspace / "data" / "start")
    (workspace / "params.yaml").write_text(yaml.safe_dump(apply_overrides(read_yaml(workspace / "params.yaml"),
                                                                          OVERRIDES), sort_keys=False))
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    # MLflow's requests retry for minutes by default (a server restarting within them loses nothing); here they fail
    # at once, so that the stage sees the server gone.
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    checkpoints = workspace / "checkpoints" / "cold_start_sft"
    model = workspace / "models" / "cold_start_sft" / "model.safetensors"

    with mlflow_server(tmp_path, port) as server:
        stage = subprocess.Popen(["dvc", "repro", "cold_start_sft"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env=env)
        wait_for(lambda: complete_checkpoints(checkpoints) or stage.poll() is not None, 180, "a first checkpoint",
                 interval=0.05)
        assert stage.poll() is None, stage.stdout.read()
        os.killpg(server.pid, signal.SIGKILL)  # the server dies while the stage trains on
        output = stage.communicate(timeout=300)[0]
    assert stage.returncode != 0
    assert (f"cold_start_sft: the MLflow tracking server {uri} went away during the stage ([Errno 111] Connection "
            f"refused), so the stage fails after saving its work (newest checkpoint checkpoints/cold_start_sft/"
            f"checkpoint-{STEPS};") in output, output
    assert "Traceback" not in output
    assert complete_checkpoints(checkpoints)[-1] == STEPS  # the finished training is in its final checkpoint
    trained = model.read_bytes()  # and in the model the stage wrote before it failed

    # Still down: the re-run fails in seconds, naming the server, before any work.
    down, elapsed = repro(env)
    assert down.returncode != 0 and elapsed < 30, (elapsed, down.stdout + down.stderr)
    assert f"cold_start_sft: MLflow tracking server {uri} is not reachable" in down.stderr
    assert "Traceback" not in down.stderr

    # Back (same store): the re-run resumes from the final checkpoint, trains nothing more, same weights.
    with mlflow_server(tmp_path, port):
        back, _ = repro(env)
        assert back.returncode == 0, back.stdout + back.stderr
        import mlflow

        mlflow.set_tracking_uri(uri)
        runs = mlflow.search_runs(experiment_names=["faults"], filter_string="tags.stage = 'cold_start_sft'",
                                  order_by=["attributes.start_time ASC"], output_format="list")
        mlflow.set_tracking_uri(None)
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]
    assert runs[-1].data.metrics["resumed"] == 1
    assert model.read_bytes() == trained
    status = subprocess.run(["dvc", "status", "--json", "cold_start_sft"], capture_output=True, text=True, env=env,
                            check=True)
    assert json.loads(status.stdout) == {}
