"""The R1 recipe as a Prefect flow: one Prefect task per DVC stage, in DAG order.

    python -m flows.pipeline                       # every stage; DVC skips what is up to date
    python -m flows.pipeline --stages reasoning_rl # only these stages (each still through DVC)
    python -m flows.pipeline --set reasoning_rl.learning_rate=5e-7   # a DVC experiment named after the flow run
    python -m flows.pipeline --recipe qwen2.5-math-1.5b               # recipes/<name>.yaml as params: an experiment

Each task runs exactly one stage with `dvc repro --single-item <stage>` in its own process group, so DVC alone decides
what is stale (no Prefect caching), a transient failure is retried, and cancelling the flow kills the stage and all
its children; one `dvc status` first skips the stages before the first stale one (`from_first_stale`), so a run with
nothing to do starts no stage at all. A run with params overrides is one `dvc exp run --set-param ...` instead, so its
params, metrics and outputs are versioned and comparable with `dvc exp show`; so is a run of a recipe
(recipes/<name>.yaml, an overlay on the defaults whose complete params params.yaml holds for the run; shell
equivalent: `python -m tasks.blocks.params recipes/<name>.yaml > params.yaml && dvc exp run --name <name> && git
checkout params.yaml`).
Recipe and overrides are validated before any work; a stage failing on bad input (invalid data or params) is not
retried and its message is the task's error.
The flow holds no ML logic: it validates params, opens the pipeline's parent MLflow run, runs the stages (the last
one, `report`, writes reports/report.html), and reports the ladder (printed, and as a markdown artifact in the
Prefect UI).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import mlflow
import networkx as nx
import yaml
from filelock import FileLock, Timeout
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas import filters
from prefect.client.schemas.objects import StateType
from prefect.runtime import flow_run, task_run
from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES
from prefect.states import Crashed

from tasks.blocks import launch, tracking
from tasks.blocks.dvc_files import stale_stages
from tasks.blocks.params import PARAMS_FILE, Params, ParamsError, apply_overrides, dump_params, read_params, validate
from tasks.blocks.stage import BAD_INPUT_ENV

LADDER_FILE = Path("plots/ladder.md")  # the ladder stage's table (dvc.yaml); read as text, no torch import here
REPORT_FILE = Path("reports/report.html")  # the report stage's page, the last stage of dvc.yaml
LOCK_FILE = ".r1-pipeline.lock"  # one pipeline run per workspace: a second one waits here
# What an experiment run changes in the workspace and the flow puts back: its results live in the experiment.
# dvc.lock stays as DVC left it, so it keeps describing the outputs in the workspace: stages whose params the
# experiment changed are then stale for the next plain run, and DVC re-runs exactly those.
EXPERIMENT_RESTORES = ("params.yaml",)
DVC_PARAMS = Path("params.yaml")  # the one params file `dvc repro` / `dvc exp run` read
RECIPES_DIR = Path("recipes")  # params overlays for real runs, selected by name


class StageFailed(RuntimeError):
    """A stage failed for a reason that may be transient (a crash, a killed process): retried."""


class BadInput(ValueError):
    """A stage failed on invalid data or params: retrying cannot help, so it is not retried."""


def stage_order(root: str | Path | None = None) -> list[str]:
    """All stages of dvc.yaml (of the repository at `root`, default here) in dependency order (ties broken by their
    order in dvc.yaml)."""
    from dvc.repo import Repo

    with Repo(None if root is None else str(root)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        position = {stage: i for i, stage in enumerate(repo.index.stages)}
        ordered = nx.lexicographical_topological_sort(graph.reverse(), key=lambda s: position[s])
        return [stage.addressing for stage in ordered]


def select_stages(stages: list[str] | None) -> list[str]:
    order = stage_order()
    unknown = sorted(set(stages or []) - set(order))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; dvc.yaml has {order}")
    return [s for s in order if not stages or s in stages]


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """["reasoning_rl.learning_rate=5e-7", ...] (the syntax of `dvc exp run --set-param`) -> {dotted key: value}."""
    parsed = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"override {item!r}: expected <dotted.key>=<value>, e.g. reasoning_rl.max_steps=5")
        parsed[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return parsed


def recipe_file(name: str) -> Path:
    """recipes/<name>.yaml; an unknown name fails with the list of recipes."""
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
        raise ParamsError(f"unknown recipe {name!r}; {RECIPES_DIR}/ has {available}")
    return path


def validated_params(overrides: list[str] | None, recipe: str | None = None) -> Params:
    """params.yaml (or the recipe) with the overrides applied, validated: a bad key or value fails here, before any
    work."""
    path = recipe_file(recipe) if recipe else PARAMS_FILE
    source = f"{path} with overrides {overrides}" if overrides else str(path)
    return validate(apply_overrides(read_params(path), parse_overrides(overrides)), source=source)


@contextmanager
def recipe_params(recipe: str | None) -> Iterator[None]:
    """params.yaml holds the recipe while the pipeline runs (DVC reads no other params file), then is put back."""
    if recipe is None:
        yield
        return
    with restored(EXPERIMENT_RESTORES):
        DVC_PARAMS.write_text(dump_params(validated_params(None, recipe)), encoding="utf-8")  # every key spelled out
        yield


GUARD = Path(__file__).with_name("guard.py")  # stops a stage's process group when the flow process dies
STAGE_BIN_ENV = "R1_STAGE_BIN"  # where the stages' `dvc` and `python` come from, when not the flow's own venv


def stage_env(parent_run_id: str) -> dict[str, str]:
    env = dict(os.environ)
    # dvc and its stages' `python` are ours, or those of another environment: vLLM does not install beside Prefect,
    # so a GPU job runs the flow from .venv and its stages from .venv-gpu (R1_STAGE_BIN=.venv-gpu/bin).
    stage_bin = Path(env[STAGE_BIN_ENV]).resolve() if env.get(STAGE_BIN_ENV) else Path(sys.executable).parent
    env["PATH"] = f"{stage_bin}{os.pathsep}{env.get('PATH', '')}"
    env[tracking.PARENT_RUN_ENV] = parent_run_id
    env[tracking.FLOW_RUN_ENV] = str(flow_run.get_id() or "")
    return env


def run_guarded(cmd: list[str], env: dict[str, str]) -> int:
    """Run `cmd` in a process group of its own (launch.run_in_process_group) under the guard; if we are interrupted
    or cancelled, kill the whole group. Returns its exit code.

    Prefect cancels a served flow run with SIGTERM, which its engine turns into an exception in the flow's main
    thread: the `finally` below then kills the stage and everything it started (training, generation, servers). A
    flow process that is SIGKILLed runs no `finally`: the guard at the head of the group (flows/guard.py) kills it.
    """
    process = launch.run_in_process_group([sys.executable, str(GUARD), str(os.getpid()), *cmd], env,
                                          term_when_parent_dies=False)  # the guard does it
    try:
        return process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_classified(cmd: list[str], env: dict[str, str], what: str) -> None:
    """Run a DVC command; raise BadInput if a stage reported bad input, StageFailed on any other failure."""
    with tempfile.TemporaryDirectory(prefix="r1-stage-") as tmp:
        report = Path(tmp) / "bad_input.txt"  # a stage writes its error here (tasks/blocks/stage.py, stage_run)
        returncode = run_guarded(cmd, {**env, BAD_INPUT_ENV: str(report)})
        if returncode and report.exists():
            raise BadInput(f"{what} failed on bad input (not retried): {report.read_text().strip()}")
    if returncode:
        raise StageFailed(f"{what} failed (exit code {returncode}); see its log above")


def retry_unless_bad_input(task, task_run, state) -> bool:
    return not isinstance(state.result(raise_on_failure=False), BadInput)


def stage_commands(stage: str, dvc_remote: bool = False) -> list[list[str]]:
    """The DVC commands of one stage task. With `dvc_remote` the task may run on a machine that shares no disk with
    the previous ones (a job on a Docker or Kubernetes work pool): `--pull` fetches the run cache and the missing
    inputs from the default DVC remote, so upstream stages that ran elsewhere are restored from it, not re-run, and
    the stage's outs and run cache are pushed after it for the next job."""
    if not dvc_remote:
        return [["dvc", "repro", "--single-item", stage]]
    return [["dvc", "repro", "--pull", stage], ["dvc", "push", "--run-cache", stage]]


def from_first_stale(selected: list[str], stale: set[str]) -> list[str]:
    """The stages (in DAG order) to hand to `dvc repro`: the first stale one and every one after it, since what runs
    may make a later stage stale. The up-to-date ones before it are skipped without starting DVC for each (seconds
    a stage, a minute for a run with nothing to do)."""
    first = next((i for i, stage in enumerate(selected) if stage in stale), len(selected))
    return selected[first:]


@task(name="dvc-stage", cache_policy=NO_CACHE, task_run_name="{stage}", retry_condition_fn=retry_unless_bad_input)
def run_stage(stage: str, env: dict[str, str], dvc_remote: bool = False) -> str:
    for cmd in stage_commands(stage, dvc_remote):
        run_classified(cmd, env, f"stage {stage}")
    return stage


@contextmanager
def restored(paths: tuple[str, ...]) -> Iterator[None]:
    """Put these files back as they were, whatever happens in between."""
    saved = {p: Path(p).read_bytes() for p in paths if Path(p).exists()}
    try:
        yield
    finally:
        for path, content in saved.items():
            Path(path).write_bytes(content)


@task(name="dvc-experiment", cache_policy=NO_CACHE, task_run_name="dvc exp run {name}",
      retry_condition_fn=retry_unless_bad_input)
def run_experiment(name: str, overrides: list[str], stages: list[str] | None, env: dict[str, str]) -> str:
    """`dvc exp run` of the selected stages (None: the whole pipeline) with the overrides, named `name`."""
    if task_run.get_run_count() > 1:
        name = f"{name}-retry{task_run.get_run_count() - 1}"  # DVC refuses to reuse an experiment name
    cmd = ["dvc", "exp", "run", "--name", name]
    for override in overrides:
        cmd += ["--set-param", override]
    if stages:
        cmd += ["--single-item", *stages]
    run_classified(cmd, env, f"experiment {name}")
    return name


@dataclass
class RecipeRun:
    """What one execution of the recipe did: for the flow's summary."""
    name: str
    stages: list[str]
    parent_run_id: str
    experiment: str | None = None  # the DVC experiment, for runs with overrides or a recipe
    overrides: list[str] = field(default_factory=list)
    recipe: str | None = None
    ladder: str = ""


HOST_TAG, PID_TAG = "host:", "pid:"  # the tags naming the process that runs a flow run (claim_flow_run)


def claim_flow_run() -> list[str]:
    """Tag this flow run with the host and pid running it, and mark Crashed the flow runs of this host left Running by
    a process that is gone (one that lost the Prefect server for longer than its client retries, or was SIGKILLed,
    could not end its own run). Returns the ids it marked. Runs of other hosts are left to their own host."""
    me, host = str(flow_run.get_id() or ""), f"{HOST_TAG}{socket.gethostname()}"
    running = filters.FlowRunFilter(
        state=filters.FlowRunFilterState(type=filters.FlowRunFilterStateType(any_=[StateType.RUNNING])),
        tags=filters.FlowRunFilterTags(all_=[host]))
    marked = []
    with get_client(sync_client=True) as client:
        if me:
            tags = client.read_flow_run(me).tags
            client.update_flow_run(me, tags=[*tags, host, f"{PID_TAG}{os.getpid()}"])
        for run in client.read_flow_runs(flow_run_filter=running):
            pid = next((t.removeprefix(PID_TAG) for t in run.tags if t.startswith(PID_TAG)), "")
            started_ms = int(run.start_time.timestamp() * 1000) if run.start_time else 0
            if str(run.id) == me or not pid.isdigit() or tracking.process_alive(int(pid), started_ms):
                continue
            client.set_flow_run_state(run.id, Crashed(message=f"process {pid} died without ending this flow run "
                                                              f"(lost the Prefect server, or killed); marked Crashed "
                                                              f"by flow run {me or os.getpid()}"), force=True)
            marked.append(str(run.id))
    return marked


def without_prefect_traceback(run, what: str):
    """Run `run()` (a flow called from the command line); a Prefect server that stays unreachable longer than the
    client's retries ends it with one message, not an httpx traceback."""
    try:
        return run()
    except httpx.TransportError as exc:
        raise SystemExit(
            f"{what}: the Prefect server {PREFECT_API_URL.value()} did not answer ({exc}) within the client's "
            f"{PREFECT_CLIENT_MAX_RETRIES.value()} retries (PREFECT_CLIENT_MAX_RETRIES), so the flow stopped. The "
            "stages that finished are kept (dvc.lock); run again once the server is back: DVC re-runs only what did "
            "not finish, and the next flow run marks this one Crashed") from None


@contextmanager
def workspace_lock() -> Iterator[None]:
    """One run at a time per workspace, whichever deployment (or shell) started it: the next one waits here."""
    lock = FileLock(LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        get_run_logger().info("another pipeline run holds %s: waiting for it to finish", LOCK_FILE)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def run_recipe(params: Params, stages: list[str] | None, overrides: list[str] | None,
               recipe: str | None = None, dvc_remote: bool = False) -> RecipeRun:
    """Run the selected stages (all by default) under one parent MLflow run; the caller holds the workspace lock
    (and for a recipe, has put it in params.yaml: `recipe_params`). With `dvc_remote`, each stage pulls from and
    pushes to the default DVC remote (see stage_commands)."""
    logger = get_run_logger()
    selected = select_stages(stages)
    name = flow_run.get_name() or "pipeline"
    retry = {"retries": params.orchestration.retries, "retry_delay_seconds": params.orchestration.retry_delay_seconds}
    with tracking.pipeline_run(params.tracking.experiment, name, flow_run.get_id()) as parent:
        run = RecipeRun(name, selected, parent.info.run_id, overrides=list(overrides or []), recipe=recipe)
        env = stage_env(parent.info.run_id)
        if overrides or recipe:
            # DVC leaves an experiment's params in the workspace; they are put back afterwards so the next plain run
            # starts from the workspace's own params.yaml (`dvc exp apply <name>` brings the experiment back).
            logger.info("DVC experiment %s: recipe %s, overrides %s, stages %s", name, recipe, overrides, selected)
            with restored(EXPERIMENT_RESTORES):
                run.experiment = run_experiment.with_options(**retry)(
                    name, run.overrides, selected if stages else None, env)
                for stage in selected:
                    tracking.tag_with_lock(parent.info.run_id, stage)
        else:
            to_run = selected if dvc_remote else from_first_stale(selected, stale_stages(selected, env))
            for stage in selected:
                if stage not in to_run:
                    logger.info("stage %s: up to date (dvc status), not run", stage)
                    continue
                logger.info("stage %s", stage)
                run_stage.with_options(**retry)(stage, env, dvc_remote)
                tracking.tag_with_lock(parent.info.run_id, stage)
    run.ladder = LADDER_FILE.read_text() if LADDER_FILE.exists() else "(no ladder yet: the ladder stage has not run)"
    return run


def mlflow_links(parent_run_id: str) -> list[str]:
    """Markdown links to the pipeline's parent MLflow run and its stage runs."""
    ui = tracking.ui_url()
    parent = mlflow.get_run(parent_run_id)
    children = mlflow.search_runs(experiment_ids=[parent.info.experiment_id], output_format="list",
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")
    runs = [("pipeline", parent)] + sorted(((r.data.tags.get("stage", r.info.run_name), r) for r in children),
                                           key=lambda item: item[1].info.start_time)
    return [f"- [{label}]({ui}/#/experiments/{r.info.experiment_id}/runs/{r.info.run_id}) `{r.info.run_id}`"
            for label, r in runs]


def summary(run: RecipeRun) -> str:
    how = (f"DVC experiment `{run.experiment}` (`dvc exp show`), recipe: `{run.recipe or 'params.yaml'}`, "
           f"overrides: `{' '.join(run.overrides)}`" if run.experiment else "`dvc repro`, one Prefect task per stage")
    return "\n".join([f"### Recipe run `{run.name}`", "", f"- how: {how}", f"- stages: {', '.join(run.stages)}", "",
                      f"#### Ladder (`{LADDER_FILE}`, as the ladder stage last wrote it)", "", run.ladder.strip(), "",
                      "#### MLflow runs", "",
                      *mlflow_links(run.parent_run_id)])


@flow(name="r1-pipeline")
def pipeline(stages: list[str] | None = None, overrides: list[str] | None = None, recipe: str | None = None,
             dvc_remote: bool = False) -> str:
    """Run the R1 recipe through DVC; with overrides or a recipe, as a DVC experiment named after the flow run.

    Args:
        stages: DVC stages to run, e.g. ["reasoning_rl", "evaluate@reasoning_rl"] (default: all; DVC skips what is
            up to date).
        overrides: params.yaml overrides as dotted.key=value, e.g. ["reasoning_rl.learning_rate=5e-7"]; validated
            before any work. With overrides the run is `dvc exp run --set-param ...` (see `dvc exp show`).
        recipe: a params file of recipes/ by name, e.g. "qwen2.5-math-1.5b" (default: params.yaml); validated before
            any work, the overrides apply on top of it, and the run is a DVC experiment with it as params.yaml.
        dvc_remote: each stage pulls what it needs from the default DVC remote first and pushes its outputs after
            (for runs on a work pool whose machines share no disk; docs/recipes.md "Running on a Docker or
            Kubernetes work pool").
    """
    if dvc_remote and (overrides or recipe):
        raise ValueError("dvc_remote syncs plain stage runs; an experiment (overrides, recipe) stays in this "
                         "workspace: commit the recipe as params.yaml for stage jobs, or share an experiment with "
                         "`dvc exp push <remote> <name>`")
    params = validated_params(overrides, recipe)  # a bad params file, recipe, override or stage name fails the
    if recipe is None:                            # flow here, before any work (a recipe's stages, e.g.
        select_stages(stages)                     # real_data@<name>, exist once it is in params.yaml: checked
    claim_flow_run()                              # by run_recipe before its first stage)
    with workspace_lock(), recipe_params(recipe):
        run = run_recipe(params, stages, overrides, recipe, dvc_remote)
    create_markdown_artifact(summary(run), key="r1-pipeline-summary", description="ladder and MLflow runs")
    print(f"\nStage ladder (held-out split {params.evaluate.data}):\n{run.ladder}")
    if REPORT_FILE.exists():
        print(f"Run report: {REPORT_FILE.resolve()}")
    uri = tracking.tracking_uri()
    print(f"MLflow UI: {tracking.ui_url()}" if uri.startswith(("http://", "https://")) else
          f"MLflow UI: mlflow ui --backend-store-uri {tracking.redact(uri)} --host 127.0.0.1 --port 5000")
    return run.ladder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", help="run only these DVC stages (default: all)")
    parser.add_argument("--set", nargs="+", dest="overrides", metavar="KEY=VALUE",
                        help="params.yaml overrides (dotted keys): the run becomes a DVC experiment")
    parser.add_argument("--recipe", metavar="NAME",
                        help="run recipes/NAME.yaml as the params (a DVC experiment); --set applies on top of it")
    parser.add_argument("--dvc-remote", action="store_true",
                        help="each stage pulls its inputs from the default DVC remote and pushes its outputs")
    args = parser.parse_args()
    without_prefect_traceback(lambda: pipeline(stages=args.stages, overrides=args.overrides, recipe=args.recipe,
                                               dvc_remote=args.dvc_remote), "r1-pipeline")


if __name__ == "__main__":
    main()
