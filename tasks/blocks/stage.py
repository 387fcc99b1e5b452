"""The stage runner: how every stage module starts, `python -m tasks.<stage> [name]`.

One entry shape. A stage module defines `run(stage, p, params, out) -> metrics`: `stage` the name its command was
given (`cold_start_sft`, `distill_tiny`, `base`), `p` the params section it reads, `params` all of them, `out` where
it writes. Its `main()` hands `run` to `stage_main` here (or, for a command with options of its own, to `run_stage`),
which does the rest, the same way for every stage:

- the command line: the stage name, for a module that runs several stages;
- the pre-flight of a training stage: vLLM and `accelerate launch` fail here, with one message, before anything is
  recorded;
- the stage's MLflow child run (tasks/blocks/tracking.py), tagged with the git commit and the flow-run id, after
  checking the input files dvc.yaml lists for it and that the tracking server answers;
- the bad-input protocol: a stage that fails on bad data or params (DataError, ParamsError) or on params this
  machine cannot run writes its error to the file named by R1_BAD_INPUT_FILE, so the flow does not retry it;
- seeding and the launch of a training stage's ranks (tasks/blocks/launch.py);
- logging the metrics `run` returns.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from pydantic import BaseModel

from tasks.blocks import launch
from tasks.blocks.data import DataError, check_input_files
from tasks.blocks.dvc_files import stage_inputs
from tasks.blocks.params import Params, ParamsError, load_params
from tasks.blocks.tracking import (
    FLOW_RUN_ENV,
    PARENT_RUN_ENV,
    TrackingUnavailable,
    flatten,
    git_commit,
    log_metrics,
    owner_tags,
    redact,
    setup,
    tracking_uri,
    unreachable_reason,
)

# Where a stage writes the error that made it fail on bad input (invalid data or params): the flow does not retry it.
BAD_INPUT_ENV = "R1_BAD_INPUT_FILE"

Run = Callable[[str, Any, Params, Path], dict]  # run(stage, p, params, out) -> metrics


def stage_main(stages: tuple[str, ...], run: Run, description: str, *, out: str = "models/{stage}",
         section: str | None = None, trains: bool = False, artifacts: Iterable[str] = ()) -> tuple[str, dict | None]:
    """`python -m tasks.<module> [stage]`: validate params, run `run` as the stage (see `run_stage`), writing into
    `out` (`{stage}` stands for the stage's name). A module that runs several stages takes the stage's name as its
    argument; a stage ending in `_*` (e.g. `distill_*`) stands for each of its instances (`distill_tiny`). The params
    section is the stage's own (Params.stage_section) unless `section` names another one. Returns the stage's name
    and its metrics (None where `run_stage` returns None)."""
    parser = argparse.ArgumentParser(description=description)
    several = len(stages) > 1 or stages[0].endswith("_*")
    if several:
        parser.add_argument("stage", help=f"one of {', '.join(stages)}")
    stage = parser.parse_args().stage if several else stages[0]
    family = next((s for s in stages if stage == s or (s.endswith("_*") and stage.startswith(s[:-1]))), None)
    if family is None:
        parser.error(f"unknown stage '{stage}'; this module runs {', '.join(stages)}")
    # An instance of a family is a DVC foreach stage (`distill_tiny` is `distill@tiny`): MLflow tags it by that name.
    dvc_stage = stage if family == stage else f"{family[:-2]}@{stage.removeprefix(family[:-1])}"
    params = load_params()
    try:
        p = getattr(params, section) if section else params.stage_section(stage)
    except ValueError as exc:
        parser.error(str(exc))
    metrics = run_stage(dvc_stage, stage, p, params, run, Path(out.format(stage=stage)), trains=trains,
                        artifacts=artifacts)
    return stage, metrics


def run_stage(name: str, stage: str, p: BaseModel, params: Params, run: Run, out: Path, *, trains: bool = False,
              tags: dict[str, str] | None = None, artifacts: Iterable[str] = ()) -> dict | None:
    """Run `run(stage, p, params, out)` as the stage `name` (as dvc.yaml and MLflow name it) in its MLflow run, log
    the metrics it returns, then the `artifacts` (files), and return the metrics.

    A training stage (`trains`) is seeded first, and runs in this process or, when params ask for more than one
    process, an accelerate config or a vLLM server, in every rank of `accelerate launch` running
    `python -m <run's module> <this command's arguments>` (tasks/blocks/launch.py), all logging to this one run; it
    returns the metrics on the process that computed them, None elsewhere."""
    if not trains:
        with stage_run(name, p, params.tracking.experiment, tags):
            metrics = run(stage, p, params, out)
            log_metrics(metrics)
            for artifact in artifacts:
                mlflow.log_artifact(artifact)
        return metrics
    relaunch = launch.wanted(params.runtime, p)
    try:  # before the run exists: vLLM or a launch that cannot work here fails with one message, nothing recorded
        if getattr(p, "use_vllm", False):
            from tasks.blocks.generation import require_vllm, require_vllm_server

            require_vllm(f"{name}.use_vllm", "false")
            if p.vllm_mode == "server":
                require_vllm_server(f"{name}.vllm_mode")
        if relaunch:
            lora = getattr(getattr(p, "lora", None), "enabled", False)
            launch.check(params.runtime, lora=lora, gpus_reserved=launch.vllm_server_gpus(p))
    except RuntimeError as exc:
        report_bad_input(exc)  # this machine or these params cannot run it: a flow does not retry
        raise
    with stage_run(name, p, params.tracking.experiment, tags) as active:
        if relaunch:  # `python -m tasks.sft ...` runs as __main__: its spec has the module's name
            module = sys.modules[run.__module__].__spec__.name
            with launch.vllm_server_for(p):
                launch.relaunch(params.runtime, active.info.run_id, module, launch.training_env(p))
            return None
        if launch.in_rank():
            launch.init_rank()
        # Seeded here, not only by the Trainer: TRL builds a model named by path (a reward model's new score head, a
        # LoRA adapter) before the Trainer seeds, and torch's generator starts from a random seed in each process.
        from transformers import set_seed  # here: the flows import this module and need no transformers

        set_seed(params.seed)
        metrics = run(stage, p, params, out)
        if launch.in_rank():  # the evidence, per rank, that every rank finished
            print(f"rank {launch.rank()}: {name} finished", flush=True)
        if not launch.is_main_process():
            return None
        log_metrics(metrics)
        for artifact in artifacts:
            mlflow.log_artifact(artifact)
        return metrics


@contextmanager
def stage_run(stage: str, params: BaseModel, experiment: str,
              tags: dict[str, str] | None = None) -> Iterator[mlflow.ActiveRun | None]:
    """An MLflow run for one stage, tagged with git commit and flow-run id (and `tags`); failed if the stage raises.

    Before it: the stage's input files (its deps in dvc.yaml) are checked, and the tracking server must answer; each
    fails with one message. A tracking server that goes away during the stage fails it once its work is saved, with
    a message saying so. In a rank launched by the stage (tasks/blocks/launch.py) the main process joins the stage's
    run, the others log nothing (yield None)."""
    if not launch.in_rank():  # the stage process checked them before it launched the ranks
        with bad_input_reported():
            check_input_files(stage_inputs(stage))
    try:
        setup(experiment)
    except TrackingUnavailable as exc:
        raise SystemExit(f"{stage}: {exc}") from None
    try:
        with _open_stage_run(stage, params, tags or {}) as run, bad_input_reported():
            yield run
    except mlflow.exceptions.MlflowException:
        reason = unreachable_reason()
        if reason is None:
            raise
        # One message, no traceback (MLflow's errors name the URI with its credentials).
        raise SystemExit(f"{stage}: the MLflow tracking server {redact(tracking_uri())} went away during the stage "
                         f"({reason}), so the stage fails after saving its work ({kept_work(stage)}; what it wrote "
                         "stays in place, its metrics from then on are not logged). Run it again once the server is "
                         "back: a training stage resumes from its newest checkpoint") from None


@contextmanager
def bad_input_reported() -> Iterator[None]:
    try:
        yield
    except (DataError, ParamsError) as exc:
        report_bad_input(exc)
        raise


def report_bad_input(exc: Exception) -> None:
    """Tell the flow (if one runs this stage) that it failed on bad input, so that it does not retry it."""
    if os.environ.get(BAD_INPUT_ENV):
        Path(os.environ[BAD_INPUT_ENV]).write_text(f"{type(exc).__name__}: {exc}\n", encoding="utf-8")


def kept_work(stage: str) -> str:
    """What a failed stage leaves for its re-run: its newest complete checkpoint."""
    checkpoints = Path("checkpoints") / stage.replace("@", "_")
    done = sorted(checkpoints.glob("checkpoint-*/trainer_state.json"), key=lambda f: int(f.parent.name[11:]))
    return f"newest checkpoint {done[-1].parent}" if done else f"no checkpoint in {checkpoints}"


@contextmanager
def _open_stage_run(stage: str, params: BaseModel, extra_tags: dict[str, str]) -> Iterator[mlflow.ActiveRun | None]:
    if launch.in_rank():
        if not launch.is_main_process():
            yield None
            return
        with mlflow.start_run(run_id=os.environ[launch.RUN_ID_ENV]) as run:
            yield run
        return
    tags = {"stage": stage, "git_commit": git_commit(), **owner_tags(), **extra_tags}
    if os.environ.get(FLOW_RUN_ENV):
        tags["prefect_flow_run_id"] = os.environ[FLOW_RUN_ENV]
    # Transformers' MLflow callback logs into the active run (ours) instead of starting its own.
    os.environ.pop("MLFLOW_RUN_ID", None)
    with mlflow.start_run(run_name=stage, parent_run_id=os.environ.get(PARENT_RUN_ENV) or None, tags=tags) as run:
        # Prefixed so TRL's own TrainingArguments params (same names, other values) never collide with ours.
        mlflow.log_params(flatten(params, prefix="params."))
        yield run
