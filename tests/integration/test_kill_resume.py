"""A training stage SIGKILLed mid-training resumes from its newest checkpoint when DVC re-runs it."""

import json
import shutil
import signal
import subprocess
import time

import mlflow
import psutil
import pytest
import yaml

from tasks.blocks.params import apply_overrides, read_yaml

STEPS = 6
# reasoning_rl from a tiny model, no upstream training: prepare_data is the finished stage before it.
OVERRIDES = {"reasoning_rl.model": "models/start", "reasoning_rl.max_steps": STEPS, "reasoning_rl.save_steps": 2,
             "reasoning_rl.per_device_train_batch_size": 4, "reasoning_rl.num_generations": 2,
             "reasoning_rl.logging_steps": 1, "student_rl.max_steps": STEPS, "tracking.experiment": "kill-resume"}


def dvc(*args, check=True):
    result = subprocess.run(["dvc", *args], capture_output=True, text=True)
    assert not check or result.returncode == 0, result.stdout + result.stderr
    return result


def complete_checkpoints(path):
    return sorted(int(c.parent.name.split("-")[1]) for c in path.glob("checkpoint-*/trainer_state.json"))


def stage_process(dvc_pid):
    """The stage's own python process under DVC (DVC's short-lived helpers may vanish while we look)."""
    for child in psutil.Process(dvc_pid).children(recursive=True):
        try:
            if "tasks.grpo" in child.cmdline():
                return child
        except psutil.Error:
            pass
    raise AssertionError("no `python -m tasks.grpo` process under dvc repro")


def stage_runs(stage):
    return mlflow.search_runs(experiment_names=["kill-resume"], filter_string=f"tags.stage = '{stage}'",
                              order_by=["attributes.start_time ASC"], output_format="list")


def steps_logged(run_id):
    return [m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "reward")]


@pytest.mark.slow
def test_a_killed_training_stage_resumes_where_it_stopped(workspace, tiny):
    shutil.copytree(tiny, workspace / "models" / "start")
    (workspace / "params.yaml").write_text(yaml.safe_dump(apply_overrides(read_yaml(workspace / "params.yaml"),
                                                                          OVERRIDES), sort_keys=False))
    dvc("repro", "prepare_data")
    data_lock = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]["prepare_data"]

    # Kill the stage's own process (not DVC) once its first checkpoint is complete.
    repro = subprocess.Popen(["dvc", "repro", "reasoning_rl"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    checkpoints = workspace / "checkpoints" / "reasoning_rl"
    deadline = time.monotonic() + 120
    while not complete_checkpoints(checkpoints):
        assert repro.poll() is None and time.monotonic() < deadline, "the stage ended before its first checkpoint"
        time.sleep(0.05)
    stage_process(repro.pid).send_signal(signal.SIGKILL)
    assert repro.wait(timeout=60) != 0
    resumed_from = complete_checkpoints(checkpoints)[-1]
    assert resumed_from < STEPS
    (killed,) = stage_runs("reasoning_rl")
    assert killed.info.status == "RUNNING"  # nobody could end it: the process was SIGKILLed

    # DVC sees only the killed stage as changed; the finished stage before it is intact.
    status = json.loads(dvc("status", "--json", "--with-deps", "reasoning_rl").stdout)
    assert list(status) == ["reasoning_rl"]

    rerun = dvc("repro", "reasoning_rl")
    assert "'prepare_data' didn't change, skipping" in rerun.stdout
    assert yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]["prepare_data"] == data_lock
    assert json.loads(dvc("status", "--json", "--with-deps", "reasoning_rl").stdout) == {}
    assert len(stage_runs("prepare_data")) == 1

    killed_again, resumed = stage_runs("reasoning_rl")
    # The orphan is marked FAILED by the next run; the new run resumed and counted on from the checkpoint.
    assert killed_again.info.status == "FAILED" and "died without ending this run" in killed_again.data.tags["failure"]
    assert resumed.info.status == "FINISHED"
    assert resumed.data.metrics["resumed"] == 1 and resumed.data.metrics["steps"] == STEPS
    assert steps_logged(resumed.info.run_id) == list(range(resumed_from + 1, STEPS + 1))  # fewer than a fresh run's
    # The killed run logged its first steps; transformers logs to MLflow asynchronously, so the last step's metrics
    # may still have been queued when the SIGKILL came.
    before_kill = steps_logged(killed.info.run_id)
    assert before_kill == list(range(1, len(before_kill) + 1)) and 1 <= len(before_kill) <= resumed_from + 1
