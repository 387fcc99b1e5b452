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
from tests.integration.test_orchestration import free_port, stop, wait_for, wait_healthy

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



def start_prefect_server(home: Path, port: int) -> subprocess.Popen:
    """`prefect server start` on 127.0.0.1:port over a store in `home` (kept across restarts), once it answers."""
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": url}
    log = home / f"server-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                    "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_healthy(process, f"{url}/health", log, "the Prefect server")
    except BaseException:
        stop(process)
        raise
    return process


def flow_runs(url: str, **filters) -> list:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        return client.read_flow_runs(sort="START_TIME_ASC", **filters)


def task_runs(url: str, flow_run) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])))


def start_flow(stages: list[str], url: str, home: Path, log: Path, **env: str) -> subprocess.Popen:
    """`python -m flows.pipeline --stages ...` (what `make run` starts) against the server at `url`."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "flows.pipeline", "--stages", *stages], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(home), **env})


def stage_runs_of(flow_run_id: str) -> list:
    import mlflow

    return mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.prefect_flow_run_id = '{flow_run_id}'")


def test_a_prefect_server_restart_in_the_middle_of_a_flow_run_loses_no_stage(workspace, tmp_path):
    # A real server is stopped while a stage of the flow runs and started again (same store, same port) only once
    # that stage has ended, so the flow's report of the finished stage and of its own end meet a server that is down.
    home = tmp_path / "prefect-home"
    home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    lock = workspace / "dvc.lock"
    server = start_prefect_server(home, port)
    flows = []

    def stop_during(stage: str, flow: subprocess.Popen, log: Path) -> None:
        wait_for(lambda: f"Running stage '{stage}'" in log.read_text() or flow.poll() is not None, 120,
                 f"stage {stage}", interval=0.1)
        stop(server)
        assert flow.poll() is None, log.read_text()[-3000:]
        wait_for(lambda: f"\n  {stage}:" in (lock.read_text() if lock.exists() else "") or flow.poll() is not None,
                 120, f"stage {stage} to end", interval=0.2)

    try:
        # 1. A restart within the client's retries (PREFECT_CLIENT_MAX_RETRIES, ~1 min by default): the run finishes.
        flows.append(flow := start_flow(["prepare_data"], url, home, log := tmp_path / "restart.log"))
        stop_during("prepare_data", flow, log)
        time.sleep(2)  # the flow meets the server down
        assert flow.poll() is None, log.read_text()[-3000:]
        server = start_prefect_server(home, port)
        assert flow.wait(timeout=300) == 0, log.read_text()[-4000:]
        (restarted,) = flow_runs(url)
        assert restarted.state.is_completed(), restarted.state
        assert [(t.name, t.state.type.value) for t in task_runs(url, restarted)] == [("prepare_data", "COMPLETED")]

        # 2. A server down for longer than the client's retries (none here) when the flow ends: the command ends
        # with one message (after Prefect's engine logs the error), not a traceback; the stage that ran is kept,
        # and the next run completes it without running it again.
        flows.append(flow := start_flow(["base_model"], url, home, log := tmp_path / "outage.log",
                                        PREFECT_CLIENT_MAX_RETRIES="0"))
        stop_during("base_model", flow, log)
        assert flow.wait(timeout=120) == 1
        output = log.read_text()
        message = f"r1-pipeline: the Prefect server {url} did not answer ([Errno 111] Connection refused) within "
        assert message in output, output[-4000:]
        assert "Traceback" not in output.split(message)[-1], output[-4000:]
        server = start_prefect_server(home, port)
        flows.append(flow := start_flow(["base_model"], url, home, log := tmp_path / "rerun.log"))
        assert flow.wait(timeout=300) == 0, log.read_text()[-4000:]
        assert "stage base_model: up to date (dvc status), not run" in log.read_text()
        _, lost, rerun = flow_runs(url)
    finally:
        for flow in flows:
            if flow.poll() is None:
                os.killpg(flow.pid, signal.SIGKILL)
        stop(server)
    assert rerun.state.is_completed(), rerun.state
    assert lost.state.type.value == "CRASHED" and "died without ending this flow run" in lost.state.message
    status = subprocess.run(["dvc", "status", "--json", "prepare_data", "base_model"], capture_output=True, text=True,
                            check=True)
    assert json.loads(status.stdout) == {}
    # Each stage ran once, in the flow run it was running in when the server went away.
    assert sorted(r.data.tags.get("stage", "pipeline") for r in stage_runs_of(str(restarted.id))) == [
        "pipeline", "prepare_data"]
    assert sorted(r.data.tags.get("stage", "pipeline") for r in stage_runs_of(str(lost.id))) == [
        "base_model", "pipeline"]
    assert all(r.info.status == "FINISHED" for r in stage_runs_of(str(lost.id)))
    assert [r.data.tags.get("stage", "pipeline") for r in stage_runs_of(str(rerun.id))] == ["pipeline"]
