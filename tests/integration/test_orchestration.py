"""The deployments against a real local Prefect server: UI-style triggers with overrides (DVC experiments), the
scheduled retrain and its promotion gate, two runs at once, cancellation, retries.

One server (`prefect server start` on 127.0.0.1, its own PREFECT_HOME) and one `python -m flows.serve` process serve
the whole module, stopped by PID. Runs select a few cheap stages of a smoke-sized workspace whose final model is the
base model, so each run costs seconds; the tests run in file order and share the workspace (DVC reuses its work).
"""

import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import psutil
import pytest
import yaml
from mlflow import MlflowClient
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.deployments import run_deployment
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling
from prefect.utilities.asyncutils import run_coro_as_sync

from flows import pipeline as pipeline_module
from flows.pipeline import BadInput, pipeline, run_stage
from tasks.blocks import stage
from tests.integration.conftest import SMOKE
from tests.workspace import make_workspace

pytestmark = pytest.mark.slow

STAGES = ["prepare_data", "base_model", "reward_model", "evaluate@base", "register"]
WORKSPACE_PARAMS = {
    "evaluate.models": ["base"],
    "registry.model": "base",
    "reward_model.model": "models/base",  # the recipe's RM starts from resft, a stage these runs do not select
    "base_model.epochs": 0.2,
    "reward_model.epochs": 0.2,
    "evaluate.num_samples": 2,
    "orchestration.retries": 0,
    "orchestration.retrain_cron": "0 3 1 1 *",  # from params; never due while the tests run
    # The gate the "worse" retrain must fail. pass@1 of a smoke model is ~0 either way; a collapse of the reasoning
    # length is a regression too (R1's RL grows it), and a one-token budget collapses it for sure.
    "promotion.gate": {"pass@1": "higher", "mean_completion_tokens": "higher"},
}
RUN_TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(process: subprocess.Popen) -> None:
    """Stop a process started in its own session, and everything it started, by its PID."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(check, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_healthy(process: subprocess.Popen, health_url: str, log: Path, what: str, timeout: float = 120) -> None:
    """Wait until a server started as `process` answers 200 at `health_url`; fail with its log if it exits."""
    def healthy():
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return urllib.request.urlopen(health_url, timeout=2).status == 200
        except OSError:
            return False

    wait_for(healthy, timeout, what)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    path = make_workspace(tmp_path_factory.mktemp("orchestration") / "repo",
                          {**yaml.safe_load(SMOKE.read_text()), **WORKSPACE_PARAMS})
    for key, value in (("user.name", "r1-pipeline test"), ("user.email", "test@r1-pipeline.invalid")):
        subprocess.run(["git", "config", key, value], cwd=path, check=True)  # `dvc exp run` commits
    return path


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory):
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="module")
def server(prefect_home):
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_API_URL": url}  # else the UI calls the default port's API
    log = (prefect_home / "server.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)

    try:
        wait_healthy(process, f"{url}/health", prefect_home / "server.log", "the Prefect server")
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
            drain_prefect_workers()
    finally:
        stop(process)


def drain_prefect_workers() -> None:
    """Send this process's queued Prefect logs and events while the server is up, as prefect_test_harness does:
    the queues' workers would otherwise keep trying a stopped server and hang the end of the test session."""
    async def drain():
        for drained in (APILogWorker.drain_all(), EventsWorker.drain_all()):
            if inspect.isawaitable(drained):
                await drained

    run_coro_as_sync(drain())


@pytest.fixture(scope="module")
def served(server, workspace, prefect_home):
    """`python -m flows.serve` in the workspace: flow runs execute as its subprocesses, in the workspace."""
    env = {**os.environ, "PREFECT_API_URL": server, "PREFECT_HOME": str(prefect_home),
           "MLFLOW_TRACKING_URI": f"sqlite:///{workspace}/mlflow.db", "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    log = (prefect_home / "serve.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "flows.serve"], cwd=workspace, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)

    def deployments():
        assert process.poll() is None, (prefect_home / "serve.log").read_text()[-3000:]
        with get_client(sync_client=True) as client:
            return len(client.read_deployments()) == 2

    try:
        wait_for(deployments, 120, "the served deployments", interval=1)
        yield process
    finally:
        stop(process)


def trigger(name: str, timeout: float = RUN_TIMEOUT, **parameters):
    return run_deployment(name, parameters=parameters, timeout=timeout, poll_interval=1)


def finished(flow_run, prefect_home: Path):
    assert flow_run.state.is_final(), f"{flow_run.name} did not finish: {flow_run.state}"
    assert flow_run.state.is_completed(), (f"{flow_run.name}: {flow_run.state}\n"
                                            + (prefect_home / "serve.log").read_text()[-4000:])
    return flow_run


def artifact(flow_run_id) -> str:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert found, "the flow run posted no artifact"
    return found[0].data


def mlflow_client(workspace: Path) -> MlflowClient:
    mlflow.set_tracking_uri(f"sqlite:///{workspace}/mlflow.db")
    return MlflowClient()


def test_deployments_have_the_parameters_form_and_the_schedule_from_params(served):
    with get_client(sync_client=True) as client:
        recipe = client.read_deployment_by_name("r1-pipeline/r1-pipeline")
        retrain = client.read_deployment_by_name("scheduled-retrain/scheduled-retrain")
    for deployment in (recipe, retrain):
        assert {"stages", "overrides"} <= set(deployment.parameter_openapi_schema["properties"])
        assert deployment.global_concurrency_limit.limit == 1  # one run at a time; a second one waits
    assert [s.schedule.cron for s in retrain.schedules] == [WORKSPACE_PARAMS["orchestration.retrain_cron"]]


def test_invalid_overrides_fail_the_flow_at_once_with_the_message(server, workspace, monkeypatch):
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workspace}/mlflow.db")
    state = pipeline(stages=["prepare_data"], overrides=["reasoning_rl.learning_rte=5e-7"], return_state=True)
    assert state.is_failed()
    assert "unknown key 'reasoning_rl.learning_rte' (did you mean 'learning_rate'?)" in state.message
    assert not (workspace / "data" / "toy").exists()  # no stage ran


def test_transient_failures_are_retried_and_bad_input_is_not(server, monkeypatch, tmp_path):
    outcomes, calls = [], []

    def fake_stage_process(cmd, env):  # stands in for `dvc repro` of one stage
        calls.append(cmd)
        outcome = outcomes.pop(0)
        if outcome == "bad input":  # what stage.stage_run writes when a stage raises DataError
            Path(env[stage.BAD_INPUT_ENV]).write_text("DataError: data/toy/train.jsonl:3: broken JSON line")
            return 1
        return outcome

    monkeypatch.setattr(pipeline_module, "run_guarded", fake_stage_process)

    @flow
    def one_stage():
        return run_stage.with_options(retries=2, retry_delay_seconds=0)("prepare_data", {})

    outcomes[:] = [1, 137, 0]  # a crash, a kill, then success
    assert one_stage() == "prepare_data" and len(calls) == 3

    calls.clear()
    outcomes[:] = ["bad input", 0, 0]
    state = one_stage(return_state=True)
    assert state.is_failed() and len(calls) == 1
    assert "failed on bad input (not retried)" in state.message and "train.jsonl:3: broken JSON line" in state.message
    with pytest.raises(BadInput):
        state.result()


def test_a_run_with_overrides_is_a_dvc_experiment_tracked_with_its_flow_run(served, workspace, prefect_home):
    # The example override. No selected stage reads it, so the retrain below finds their work up to date;
    # the experiment still records it and runs every selected stage (the workspace is fresh).
    own = yaml.safe_load((workspace / "params.yaml").read_text())["reasoning_rl"]["learning_rate"]
    assert own != 5e-7
    run = finished(trigger("r1-pipeline/r1-pipeline", stages=STAGES, overrides=["reasoning_rl.learning_rate=5e-7"]),
                   prefect_home)

    shown = json.loads(subprocess.run(["dvc", "exp", "show", "--json"], cwd=workspace, check=True,
                                      capture_output=True, text=True).stdout)
    experiments = {rev["name"]: rev["data"] for baseline in shown for exp in baseline.get("experiments") or []
                   for rev in exp["revs"]}
    assert run.name in experiments, f"no experiment named {run.name}: {list(experiments)}"
    data = experiments[run.name]
    assert data["params"]["params.yaml"]["data"]["reasoning_rl"]["learning_rate"] == 5e-7
    assert 0.0 <= data["metrics"]["metrics/base.json"]["data"]["pass@1"] <= 1.0
    assert data["metrics"]["metrics/registry.json"]["data"]["version"] == 1
    # The workspace's own params are back: the next plain run is not the experiment.
    assert yaml.safe_load((workspace / "params.yaml").read_text())["reasoning_rl"]["learning_rate"] == own

    mlflow_client(workspace)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string=f"tags.prefect_flow_run_id = '{run.id}'")
    assert {r.data.tags.get("stage", "pipeline") for r in runs} == {"pipeline", *STAGES}
    assert all(r.info.status == "FINISHED" for r in runs)
    summary = artifact(run.id)
    assert f"DVC experiment `{run.name}`" in summary and "#### MLflow runs" in summary
    parent = next(r for r in runs if r.data.tags.get("kind") == "pipeline")
    assert f"/runs/{parent.info.run_id}" in summary


def test_scheduled_retrain_promotes_the_first_model_then_keeps_a_worse_one_as_challenger(served, workspace,
                                                                                         prefect_home):
    drop = workspace / "data" / "incoming"
    drop.mkdir(parents=True)
    good = {"id": "n1", "prompt": "Ann has 2 pens and finds 5 more. How many pens does she have?", "answer": "7"}
    (drop / "prompts-new.jsonl").write_text(json.dumps(good) + "\n")
    (drop / "prompts-broken.jsonl").write_text(json.dumps(good) + "\n{not json\n")

    first = finished(trigger("scheduled-retrain/scheduled-retrain", stages=STAGES), prefect_home)

    # Only prepare_data was stale (new prompts); the model registered by the experiment above is the first champion.
    assert first.state.name == "Completed" and "version 1: first model" in first.state.message
    client = mlflow_client(workspace)
    registered = json.loads((workspace / "metrics" / "registry.json").read_text())["version"]
    champion = client.get_model_version_by_alias("r1-smoke", "champion")
    assert int(champion.version) == registered
    # The drop folder went through prepare_data (a DVC stage): the good file is in the RL prompts, the bad one not.
    train_ids = [json.loads(line)["id"] for line in (workspace / "data" / "toy" / "train.jsonl").open()]
    assert train_ids[-1] == "incoming:n1" and train_ids.count("incoming:n1") == 1
    assert "broken JSON line" in next((drop / "quarantine").glob("*.reason.txt")).read_text()
    assert "quarantined `prompts-broken.jsonl`" in artifact(first.id)

    worse = finished(trigger("scheduled-retrain/scheduled-retrain", stages=STAGES,
                             overrides=["evaluate.max_new_tokens=1"]), prefect_home)

    assert worse.state.name == "Not promoted"
    challenger = client.get_model_version_by_alias("r1-smoke", "challenger")
    assert int(challenger.version) > int(champion.version)
    assert int(client.get_model_version_by_alias("r1-smoke", "champion").version) == int(champion.version)
    # The decision follows the metrics the two versions were registered with.
    tokens = [float(v.tags["metric.mean_completion_tokens"]) for v in (champion, challenger)]
    assert tokens[1] <= 1 < tokens[0], f"the override did not make the model worse: {tokens}"
    assert "worse than the champion on mean_completion_tokens" in worse.state.message
    assert challenger.tags["promotion"].startswith("not promoted: worse than the champion on mean_completion_tokens")
    assert "**Not promoted**" in artifact(worse.id)


def test_two_runs_triggered_at_once_both_complete_one_after_the_other(served, workspace, prefect_home):
    # Stages with nothing to do: the runs cost only their start-up, and the point is that they never overlap.
    runs = [trigger("r1-pipeline/r1-pipeline", timeout=0, stages=["prepare_data", "base_model"]) for _ in range(2)]

    def done():
        with get_client(sync_client=True) as client:
            current = [client.read_flow_run(r.id) for r in runs]
        return current if all(r.state.is_final() for r in current) else None

    first, second = sorted(wait_for(done, 2 * RUN_TIMEOUT, "both runs", interval=1), key=lambda r: r.start_time)
    finished(first, prefect_home), finished(second, prefect_home)
    assert first.end_time <= second.start_time, "the two runs overlapped"


def stage_processes(workspace: Path) -> list[psutil.Process]:
    """The `dvc` process the flow started in the workspace and its children."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = process.info["cmdline"] or []
        if process.info["cwd"] == str(workspace) and any(Path(part).name == "dvc" for part in cmdline[:2]):
            found += [process, *process.children(recursive=True)]
    return found


def test_cancelling_a_run_kills_its_stage_and_every_child(served, workspace, prefect_home):
    run = trigger("r1-pipeline/r1-pipeline", timeout=0, stages=["base_model"],
                  overrides=["base_model.epochs=500"])  # minutes of training: it is cancelled long before
    processes = wait_for(lambda: (found := stage_processes(workspace)) and any(
        "tasks.base_model" in p.cmdline() for p in found[1:]) and found, 120, "the training process")

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Cancelling(), force=True)
        wait_for(lambda: client.read_flow_run(run.id).state.is_cancelled(), 90, "the cancellation", interval=1)

    def gone(process: psutil.Process) -> bool:
        try:
            return process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(lambda: all(gone(p) for p in processes), 15, "the stage processes to die")
    assert yaml.safe_load((workspace / "params.yaml").read_text())["base_model"]["epochs"] == 0.2  # put back


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="no headless Chromium (apt install chromium); see scripts/check_prefect_ui.py")
def test_the_deployment_and_its_parameters_form_appear_in_the_prefect_ui(served, server):
    from scripts.check_prefect_ui import check_deployment_form

    check_deployment_form(server.removesuffix("/api"), "r1-pipeline", ["stages", "overrides", "recipe"],
                          choices=["prepare_data", "evaluate@base", "real_data@math500", "qwen2.5-math-1.5b-8gpu"])


def test_the_run_form_offers_the_workspaces_stage_names_and_the_recipes(served):
    with get_client(sync_client=True) as client:
        form = client.read_deployment_by_name("r1-pipeline/r1-pipeline").parameter_openapi_schema["properties"]
    stages = form["stages"]["anyOf"][0]["items"]["enum"]
    assert set(STAGES) <= set(stages) and "real_data@math500" in stages
    assert form["recipe"]["anyOf"][0]["enum"] == ["qwen2.5-math-1.5b", "qwen2.5-math-1.5b-8gpu", "smollm2-135m"]
