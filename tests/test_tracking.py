import os
import subprocess
import time

import mlflow
import pytest

from tasks.blocks import tracking


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    tracking.setup("orphans")
    yield mlflow.MlflowClient()
    mlflow.set_tracking_uri(None)


def running_run(client, pid, host):
    experiment = client.get_experiment_by_name("orphans").experiment_id
    return client.create_run(experiment, tags={tracking.PID_TAG: str(pid), tracking.HOST_TAG: host}).info.run_id


def test_runs_left_running_by_a_dead_process_are_marked_failed(store):
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = tracking.owner_tags()[tracking.HOST_TAG]
    killed = running_run(store, gone.pid, host)
    alive = running_run(store, tracking.owner_tags()[tracking.PID_TAG], host)
    elsewhere = running_run(store, gone.pid, "another-host")

    assert tracking.fail_orphaned_runs("orphans") == [killed]

    assert store.get_run(killed).info.status == "FAILED"
    assert f"process {gone.pid} died without ending this run" in store.get_run(killed).data.tags["failure"]
    assert store.get_run(alive).info.status == "RUNNING"  # its process still runs
    assert store.get_run(elsewhere).info.status == "RUNNING"  # another machine's process: not ours to judge


def test_a_pid_taken_by_a_later_process_does_not_keep_a_run_alive():
    now_ms = int(time.time() * 1000)
    assert tracking.process_alive(os.getpid(), since_ms=now_ms)
    assert not tracking.process_alive(os.getpid(), since_ms=0)  # a run of 1970: this process came later
