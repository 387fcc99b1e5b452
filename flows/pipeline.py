"""The R1 recipe as a Prefect flow: one Prefect task per DVC stage, in DAG order.

    python -m flows.pipeline                       # every stage; DVC skips what is up to date
    python -m flows.pipeline --stages reasoning_rl # only these stages (each still through DVC)

Each task runs exactly one stage with `dvc repro --single-item <stage>` in its own process group, so DVC alone
decides what is stale, a failure is retried, and cancelling the flow kills the stage and all its children.
The flow holds no ML logic: it validates params, opens the pipeline's parent MLflow run, runs the stages (the last
one, `report`, writes reports/report.html), and prints the ladder and where the report is.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import networkx as nx
from filelock import FileLock
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from tasks import tracking
from tasks.evaluate import LADDER
from tasks.params import load_params
from tasks.report import REPORTS

LOCK_FILE = ".r1-pipeline.lock"  # one pipeline run per workspace: a second one waits here


class StageFailed(RuntimeError):
    pass


def stage_order() -> list[str]:
    """All stages of dvc.yaml in dependency order (ties broken by their order in dvc.yaml)."""
    from dvc.repo import Repo

    with Repo() as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        position = {stage: i for i, stage in enumerate(repo.index.stages)}
        ordered = nx.lexicographical_topological_sort(graph.reverse(), key=lambda s: position[s])
        return [stage.addressing for stage in ordered]


def stage_env(parent_run_id: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # dvc's `python` is ours
    env[tracking.PARENT_RUN_ENV] = parent_run_id
    env[tracking.FLOW_RUN_ENV] = str(flow_run.get_id() or "")
    return env


def run_in_process_group(cmd: list[str], env: dict[str, str]) -> int:
    """Run `cmd` in a new session; if we are interrupted or cancelled, kill its whole process group."""
    process = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        return process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@task(name="dvc-stage", cache_policy=NO_CACHE, task_run_name="{stage}")
def run_stage(stage: str, env: dict[str, str]) -> str:
    returncode = run_in_process_group(["dvc", "repro", "--single-item", stage], env)
    if returncode:
        raise StageFailed(f"stage {stage} failed (exit code {returncode}); see its log above")
    return stage


@flow(name="r1-pipeline")
def pipeline(stages: list[str] | None = None) -> str:
    params = load_params()  # a bad params.yaml fails the flow here, before any work
    logger = get_run_logger()
    order = stage_order()
    unknown = sorted(set(stages or []) - set(order))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; dvc.yaml has {order}")
    selected = [s for s in order if not stages or s in stages]
    stage_task = run_stage.with_options(retries=params.orchestration.retries,
                                        retry_delay_seconds=params.orchestration.retry_delay_seconds)
    with FileLock(LOCK_FILE):
        with tracking.pipeline_run(params.tracking.experiment, flow_run.get_name() or "pipeline",
                                   flow_run.get_id()) as parent:
            env = stage_env(parent.info.run_id)
            for stage in selected:
                logger.info("stage %s", stage)
                stage_task(stage, env)
                tracking.tag_with_lock(parent.info.run_id, stage)
    ladder_file = LADDER / "ladder.md"
    ladder = ladder_file.read_text() if ladder_file.exists() else "(no ladder yet: the evaluate stages have not run)"
    print(f"\nStage ladder (held-out split {params.evaluate.data}):\n{ladder}")
    if (REPORTS / "report.html").exists():
        print(f"Run report: {(REPORTS / 'report.html').resolve()}")
    print(f"MLflow UI: mlflow ui --backend-store-uri {tracking.tracking_uri()} --host 127.0.0.1 --port 5000")
    return ladder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", help="run only these DVC stages (default: all)")
    args = parser.parse_args()
    pipeline(stages=args.stages)


if __name__ == "__main__":
    main()
