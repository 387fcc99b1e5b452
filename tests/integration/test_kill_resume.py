"""A stage SIGKILLed midway, re-run through DVC, goes on from what it had finished and ends where a run without the
kill ends: every way a stage keeps finished work (the toy pretraining's checkpoints, a Trainer's checkpoints in the
reward model and GRPO, rejection sampling's shards, and evaluation, which keeps nothing and is redone).

One smoke-sized workspace serves the module: `prepare_data` runs once (the finished stage every kill must leave
alone), the stages start from a tiny model (models/start), and each case kills one stage's own process (not DVC) in
the middle of its work. The run without the kill that a case compares with is the stage's command run in this
process, in a copy of the workspace made before any stage ran (a stage process of its own costs ~10 s of imports).
"""

import csv
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import psutil
import pytest
import yaml

from tests.integration.conftest import SMOKE
from tests.tiny import build_tiny_reward_model
from tests.workspace import make_workspace

pytestmark = pytest.mark.slow

STEPS = 6
EXPERIMENT = "kill-resume"
# The stages start from the tiny model: no upstream training, prepare_data is the finished stage before each. Each
# is sized so that what follows its first finished piece (checkpoint, shard, sampling pass) lasts a second or more.
OVERRIDES = {"reasoning_rl.model": "models/start", "reasoning_rl.max_steps": STEPS, "reasoning_rl.save_steps": 2,
             "reasoning_rl.per_device_train_batch_size": 4, "reasoning_rl.num_generations": 2,
             "reasoning_rl.logging_steps": 1, "student_rl.max_steps": STEPS,
             "reasoning_rl.eval_steps": 2, "reasoning_rl.dev_prompts": 8,  # a dev evaluation at each checkpoint
             "base_model.batch_size": 4,  # 60 steps, a checkpoint every 6
             "reward_model.model": "models/start", "reward_model.epochs": 0.03, "reward_model.batch_size": 4,
             "reward_model.save_steps": 2,  # 14 steps
             "rejection_sampling.model": "models/start", "rejection_sampling.num_prompts": 24,
             "rejection_sampling.shard_size": 4, "rejection_sampling.max_new_tokens": 32,  # 6 shards
             "evaluate.models": ["start"], "evaluate.reward_model": "models/start_rm",
             "tracking.experiment": EXPERIMENT}


def dvc(*args, check=True):
    result = subprocess.run(["dvc", *args], capture_output=True, text=True)
    assert not check or result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny):
    path = make_workspace(tmp_path_factory.mktemp("kill-resume") / "repo",
                          {**yaml.safe_load(SMOKE.read_text()), **OVERRIDES})
    shutil.copytree(tiny, path / "models" / "start")
    build_tiny_reward_model(tiny, path / "models" / "start_rm")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(path)
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}/mlflow.db")
        patch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        mlflow.set_tracking_uri(f"sqlite:///{path}/mlflow.db")
        dvc("repro", "prepare_data")
        shutil.copytree(path, path.parent / "reference", symlinks=True)  # for the runs without a kill
        yield path
    mlflow.set_tracking_uri(None)


def complete_checkpoints(path):
    return sorted(int(c.parent.name.split("-")[1]) for c in path.glob("checkpoint-*/trainer_state.json"))


def stage_process(dvc_pid, module):
    """The stage's own python process under DVC (DVC's short-lived helpers may vanish while we look)."""
    for child in psutil.Process(dvc_pid).children(recursive=True):
        try:
            if module in child.cmdline():
                return child
        except psutil.Error:
            pass
    raise AssertionError(f"no `python -m {module}` process under dvc repro")


def stage_runs(stage):
    return mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string=f"tags.stage = '{stage}'",
                              order_by=["attributes.start_time ASC"], output_format="list")


def steps_logged(run_id):
    return [m.step for m in mlflow.MlflowClient().get_metric_history(run_id, "reward")]


def kill_midway(stage, module, midway, log):
    """`dvc repro stage`, its stage process SIGKILLed once `midway()` holds; the killed process's pid."""
    with log.open("w") as out:
        repro = subprocess.Popen(["dvc", "repro", stage], stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while not midway():
        assert repro.poll() is None, f"{stage} ended before the kill:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{stage}: nothing finished after 180 s"
        time.sleep(0.05)
    process = stage_process(repro.pid, module)
    process.send_signal(signal.SIGKILL)
    assert repro.wait(timeout=60) != 0, f"{stage} finished before the kill came"
    return process.pid


def test_a_killed_training_stage_resumes_where_it_stopped(workspace):
    data_lock = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]["prepare_data"]

    # Kill the stage's own process (not DVC) once its first checkpoint is complete.
    checkpoints = workspace / "checkpoints" / "reasoning_rl"
    kill_midway("reasoning_rl", "tasks.grpo", lambda: complete_checkpoints(checkpoints),
                workspace.parent / "reasoning_rl.log")
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
    # The dev curve is a fresh run's: the checkpoint's log holds the evaluation at the step the run resumed from, and
    # the resumed run does not evaluate there again.
    with (workspace / "plots" / "reasoning_rl_dev.csv").open() as f:
        assert [int(row["step"]) for row in csv.DictReader(f)] == list(range(0, STEPS + 1, 2))
    # The killed run logged its first steps; transformers logs to MLflow asynchronously, so the last step's metrics
    # may still have been queued when the SIGKILL came.
    before_kill = steps_logged(killed.info.run_id)
    assert before_kill == list(range(1, len(before_kill) + 1)) and 1 <= len(before_kill) <= resumed_from + 1


@dataclass(frozen=True)
class Kind:
    """A stage kind: its stage and command (`python -m module *args`), where it keeps finished work across a kill
    (None: nowhere, it redoes all), how to tell it is midway, and the outputs a run without the kill must match."""
    stage: str
    module: str
    args: tuple[str, ...]
    partial: str | None  # a directory: checkpoints or shards
    midway: str  # a glob under the workspace with a match once some work is finished, or "log:<text in its output>"
    outs: tuple[str, ...]
    # Keys of the JSON outputs that describe the run, not its result: whether it resumed, and the Trainer's mean loss
    # over the steps this run trained.
    about_the_run: tuple[str, ...] = ()


KINDS = [
    Kind("base_model", "tasks.base_model", (), "checkpoints/base_model",
         "checkpoints/base_model/checkpoint-*/trainer_state.json", ("models/base",)),
    # SFT resumes as the reward model does (a Trainer, models.resume_checkpoint): the reward model's case stands for
    # both; tests/integration/test_faults.py resumes SFT from its final checkpoint to the same weights.
    Kind("reward_model", "tasks.reward_model", (), "checkpoints/reward_model",
         "checkpoints/reward_model/checkpoint-*/trainer_state.json",
         ("models/reward_model", "metrics/reward_model.json"), about_the_run=("resumed", "train_loss")),
    Kind("rejection_sampling", "tasks.rejection_sampling", ("rejection_sampling",), "data/rejection_sampling/shards",
         "data/rejection_sampling/shards/shard-*.jsonl",
         ("data/rejection_sampling/blend.jsonl", "metrics/rejection_sampling.json")),
    # Nothing to keep: the sampling pass is done, the greedy pass running when the kill comes; the re-run redoes it.
    Kind("evaluate@start", "tasks.evaluate", ("start",), None, "log:start: greedy",
         ("metrics/start.json", "metrics/tts_start.json", "evals/start.json")),
]


def output_files(root, kind):
    """Every output file's bytes; provenance.json without its MLflow run id (another run's, by definition), the JSON
    metrics without the keys about the run."""
    files = {}
    for out in map(root.joinpath, kind.outs):
        for file in sorted(out.rglob("*")) if out.is_dir() else [out]:
            if file.is_file():
                data = file.read_bytes()
                if file.name == "provenance.json":
                    data = json.dumps({**json.loads(data), "mlflow_run_id": None}).encode()
                elif file.suffix == ".json" and kind.about_the_run:
                    data = json.dumps({k: v for k, v in json.loads(data).items() if k not in kind.about_the_run},
                                      sort_keys=True).encode()
                files[str(file.relative_to(root))] = data
    return files


def run_without_kill(kind, reference, monkeypatch):
    """The stage's command, whole, in this process, in the copy of the workspace: its outputs there."""
    with monkeypatch.context() as patch:
        patch.chdir(reference)
        patch.setattr(sys, "argv", [kind.module, *kind.args])
        importlib.import_module(kind.module).main()
    return output_files(reference, kind)


def finished_work(workspace, kind):
    """{path: mtime_ns} of the finished pieces (complete checkpoints, shards) in the kind's partial directory."""
    if kind.partial is None:
        return {}
    done = [c.parent for c in (workspace / kind.partial).glob("checkpoint-*/trainer_state.json")]
    done += list((workspace / kind.partial).glob("shard-*.jsonl"))
    return {p: p.stat().st_mtime_ns for p in done}


@pytest.mark.parametrize("kind", KINDS, ids=[k.stage for k in KINDS])
def test_a_stage_killed_midway_reruns_only_its_unfinished_part_to_the_same_outputs(workspace, kind, monkeypatch):
    data_lock = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]["prepare_data"]
    log = workspace.parent / f"{kind.stage}.log"
    if kind.midway.startswith("log:"):
        marker = kind.midway.removeprefix("log:")
        midway = lambda: log.exists() and marker in log.read_text(errors="replace")  # noqa: E731
    else:
        midway = lambda: any(workspace.glob(kind.midway))  # noqa: E731
    killed_pid = kill_midway(kind.stage, kind.module, midway, log)
    kept = finished_work(workspace, kind)
    trains = kind.partial is not None and kind.partial.startswith("checkpoints/")
    assert kept or kind.partial is None

    rerun = dvc("repro", kind.stage)
    assert "'prepare_data' didn't change, skipping" in rerun.stdout
    assert yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]["prepare_data"] == data_lock
    assert json.loads(dvc("status", "--json", "--with-deps", kind.stage).stdout) == {}
    killed, rerun_run = stage_runs(kind.stage)
    assert killed.data.tags["pid"] == str(killed_pid) and killed.info.status == "FAILED"  # marked by the re-run
    assert rerun_run.info.status == "FINISHED"
    if trains:  # it went on from its newest checkpoint (older ones may be gone: a Trainer keeps the last two)
        assert rerun_run.data.metrics["resumed"] == 1
    elif kind.partial is not None:  # the shards finished before the kill were not sampled again
        assert all(shard.stat().st_mtime_ns == mtime for shard, mtime in kept.items())
        assert len(list((workspace / kind.partial).glob("shard-*.jsonl"))) == 6 > len(kept)

    # A run without the kill (from scratch: the copy has no checkpoints or shards) writes the same outputs.
    assert output_files(workspace, kind) == run_without_kill(kind, workspace.parent / "reference", monkeypatch)
    if trains:
        assert stage_runs(kind.stage)[-1].data.metrics["resumed"] == 0
