"""MLflow for every stage: one child run per stage under the pipeline's parent run.

The tracking store defaults to `sqlite:///mlflow.db` in the repository (MLflow's file store is deprecated and
raises); `MLFLOW_TRACKING_URI` points elsewhere. A flow passes the parent run id and its own flow-run id through
the environment, so a stage run by `dvc repro` alone still works: it then starts a top-level run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import mlflow
import psutil
import yaml
from pydantic import BaseModel

from tasks.blocks import launch
from tasks.blocks.data import DataError, check_input_files
from tasks.blocks.params import Params, ParamsError, load_params

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PARENT_RUN_ENV = "R1_PARENT_RUN_ID"
FLOW_RUN_ENV = "R1_FLOW_RUN_ID"
# Tags naming the process that owns a run: a run still RUNNING whose process is gone was killed (SIGKILL, OOM, power).
PID_TAG, HOST_TAG = "pid", "host"
# Where a stage writes the error that made it fail on bad input (invalid data or params): the flow does not retry it.
BAD_INPUT_ENV = "R1_BAD_INPUT_FILE"
# How long the one reachability check of a tracking server at a stage's start waits (MLflow's own requests retry for
# minutes: MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT).
REACHABLE_TIMEOUT_S = 10
SECRET_KEY = re.compile(r"token|key|secret|passw|auth|signature|credential", re.IGNORECASE)  # URL query parameters


def tracking_uri() -> str:
    """The store, credentials included: pass it to MLflow, never print or log it (`redact` it first)."""
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def redact(url: str) -> str:
    """`url` fit to print, log or write in a report: the password (or a lone token) of its user info and the values
    of secret-looking query parameters replaced by ***. Credentials belong in the environment (MLFLOW_TRACKING_URI,
    or better MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN), never in params.yaml."""
    # Split by hand, not with urlsplit: urlunsplit would turn sqlite:///path into sqlite:/path.
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    location, query_sep, query = rest.partition("?")
    netloc, slash, path = location.partition("/")
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else f"***@{host}"  # https://TOKEN@host: the user part is the secret
    if query_sep:
        query, hash_sep, fragment = query.partition("#")
        pairs = [pair.partition("=") for pair in query.split("&")]
        query = "&".join(key + eq + ("***" if eq and SECRET_KEY.search(key) else value) for key, eq, value in pairs)
        query += hash_sep + fragment
    return f"{scheme}://{netloc}{slash}{path}{query_sep}{query}"


def ui_url() -> str:
    """Where people open the MLflow UI: the tracking server itself (without its credentials: the browser asks for
    them), or what `make mlflow-ui` serves."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path.rstrip("/"), "", ""))
    return os.environ.get("MLFLOW_UI_URL", "http://127.0.0.1:5000")


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server does not answer; the message names it (redacted) and says what to do."""


def unreachable_reason(timeout: float = REACHABLE_TIMEOUT_S) -> str | None:
    """Why the tracking server does not answer (connection refused, timed out, unknown host), or None when it answers
    or the store is not a server. Any other HTTP answer than a proxy's "bad gateway", "unavailable" or "gateway
    timeout" counts as up (MLflow itself then says what is wrong)."""
    if not tracking_uri().startswith(("http://", "https://")):
        return None
    try:  # the UI's URL is the server's without its user info (which urllib would take for part of the host)
        with urllib.request.urlopen(f"{ui_url()}/health", timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}" if exc.code in (502, 503, 504) else None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLError):  # it answered; MLflow's own TLS settings decide the rest
            return None
        return str(exc.reason)
    except (OSError, TimeoutError) as exc:  # a reset connection, a read that timed out
        return str(exc) or type(exc).__name__


def require_reachable() -> None:
    """Fail in seconds, naming the server, when the tracking server is down: before MLflow's own requests retry for
    minutes and before any work."""
    reason = unreachable_reason()
    if reason is not None:
        raise TrackingUnavailable(f"MLflow tracking server {redact(tracking_uri())} is not reachable ({reason}); "
                                  "start it, or point MLFLOW_TRACKING_URI at one that runs, and run again")


def setup(experiment: str) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    require_reachable()
    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment)
    fail_orphaned_runs(experiment)


def owner_tags() -> dict[str, str]:
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def process_alive(pid: int, since_ms: int) -> bool:
    """Whether the process `pid` that was running at `since_ms` (epoch ms) still runs: a process that took the same
    pid later does not count."""
    try:
        created_ms = psutil.Process(pid).create_time() * 1000
    except psutil.NoSuchProcess:
        return False
    return created_ms <= since_ms + 1000  # create_time is rounded to clock ticks


def fail_orphaned_runs(experiment: str) -> list[str]:
    """Mark FAILED the runs of `experiment` left RUNNING by a process of this host that no longer exists.

    A SIGKILLed stage cannot end its own MLflow run; the next stage or pipeline run that starts here ends it, so no
    orphan stays "RUNNING". Runs of other hosts, and runs whose process is alive, are left alone."""
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    host = socket.gethostname()
    orphans = []
    for run in client.search_runs([found.experiment_id], filter_string="attributes.status = 'RUNNING'"):
        pid, owner = run.data.tags.get(PID_TAG, ""), run.data.tags.get(HOST_TAG)
        if owner == host and pid.isdigit() and not process_alive(int(pid), run.info.start_time):
            client.set_tag(run.info.run_id, "failure", f"process {pid} died without ending this run (killed?); "
                                                       f"marked FAILED by process {os.getpid()}")
            client.set_terminated(run.info.run_id, status="FAILED")
            orphans.append(run.info.run_id)
    return orphans


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def flatten(params: BaseModel | dict, prefix: str = "") -> dict[str, str]:
    items = params.model_dump() if isinstance(params, BaseModel) else params
    flat: dict[str, str] = {}
    for key, value in items.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


@contextmanager
def stage_run(stage: str, params: BaseModel, experiment: str) -> Iterator[mlflow.ActiveRun | None]:
    """An MLflow run for one stage, tagged with git commit and flow-run id; failed if the stage raises.

    Before it: the stage's input files (its deps in dvc.yaml) are checked, and the tracking server must answer; each
    fails with one message. A tracking server that goes away during the stage fails it once its work is saved, with
    a message saying so. In a rank launched by the stage (tasks/blocks/launch.py) the main process joins the stage's run,
    the others log nothing (yield None)."""
    if not launch.in_rank():  # the stage process checked them before it launched the ranks
        with bad_input_reported():
            check_input_files(stage_inputs(stage))
    try:
        setup(experiment)
    except TrackingUnavailable as exc:
        raise SystemExit(f"{stage}: {exc}") from None
    try:
        with _open_stage_run(stage, params) as run, bad_input_reported():
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


def stage_inputs(stage: str) -> list[Path]:
    """The files and directories dvc.yaml lists as the deps of `stage` (its params aside); none when this is not a
    DVC stage of the current directory (a stage module run by hand elsewhere)."""
    if not Path("dvc.yaml").exists():
        return []
    from dvc.dependency import ParamsDependency
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo() as repo:
            found = repo.stage.collect(stage)
            return [Path(dep.fs_path) for s in found for dep in s.deps if not isinstance(dep, ParamsDependency)]
    except DvcException:
        return []


def kept_work(stage: str) -> str:
    """What a failed stage leaves for its re-run: its newest complete checkpoint."""
    checkpoints = Path("checkpoints") / stage.replace("@", "_")
    done = sorted(checkpoints.glob("checkpoint-*/trainer_state.json"), key=lambda f: int(f.parent.name[11:]))
    return f"newest checkpoint {done[-1].parent}" if done else f"no checkpoint in {checkpoints}"


@contextmanager
def _open_stage_run(stage: str, params: BaseModel) -> Iterator[mlflow.ActiveRun | None]:
    if launch.in_rank():
        if not launch.is_main_process():
            yield None
            return
        with mlflow.start_run(run_id=os.environ[launch.RUN_ID_ENV]) as run:
            yield run
        return
    tags = {"stage": stage, "git_commit": git_commit(), **owner_tags()}
    if os.environ.get(FLOW_RUN_ENV):
        tags["prefect_flow_run_id"] = os.environ[FLOW_RUN_ENV]
    # Transformers' MLflow callback logs into the active run (ours) instead of starting its own.
    os.environ.pop("MLFLOW_RUN_ID", None)
    with mlflow.start_run(run_name=stage, parent_run_id=os.environ.get(PARENT_RUN_ENV) or None, tags=tags) as run:
        # Prefixed so TRL's own TrainingArguments params (same names, other values) never collide with ours.
        mlflow.log_params(flatten(params, prefix="params."))
        yield run


def report_bad_input(exc: Exception) -> None:
    """Tell the flow (if one runs this stage) that it failed on bad input, so that it does not retry it."""
    if os.environ.get(BAD_INPUT_ENV):
        Path(os.environ[BAD_INPUT_ENV]).write_text(f"{type(exc).__name__}: {exc}\n", encoding="utf-8")


def metric_name(key: str) -> str:
    """MLflow does not allow '@' in metric or tag names: pass@1 -> pass_at_1."""
    return key.replace("@", "_at_")


def log_metrics(metrics: dict) -> None:
    """Log the numeric entries of a metrics dict."""
    mlflow.log_metrics({metric_name(k): v for k, v in metrics.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})


def run_training(stage: str, section: BaseModel, params: Params, train: Callable[[], dict],
                 module: str) -> dict | None:
    """Run `train` in the stage's MLflow run and log its metrics: in this process, or, when params ask for more than
    one process, an accelerate config or a vLLM server, in every rank of `accelerate launch` running
    `python -m <module> <this command's arguments>` (tasks/blocks/launch.py), all logging to this one run. Returns the
    metrics on the process that computed them, None elsewhere."""
    relaunch = launch.wanted(params.runtime, section)
    try:  # before the run exists: vLLM or a launch that cannot work here fails with one message, nothing recorded
        if getattr(section, "use_vllm", False):
            from tasks.blocks.generation import require_vllm

            require_vllm(f"{stage}.use_vllm", "false")
        if relaunch:
            lora = getattr(getattr(section, "lora", None), "enabled", False)
            launch.check(params.runtime, lora=lora, gpus_reserved=launch.vllm_server_gpus(section))
    except RuntimeError as exc:
        report_bad_input(exc)  # this machine or these params cannot run it: a flow does not retry
        raise
    with stage_run(stage, section, params.tracking.experiment) as run:
        if relaunch:
            with launch.vllm_server_for(section):
                launch.relaunch(params.runtime, run.info.run_id, module, launch.training_env(section))
            return None
        if launch.in_rank():
            launch.init_rank()
        # Seeded here, not only by the Trainer: TRL builds a model named by path (a reward model's new score head, a
        # LoRA adapter) before the Trainer seeds, and torch's generator starts from a random seed in each process.
        from transformers import set_seed  # here: the flows import this module and need no transformers

        set_seed(params.seed)
        metrics = train()
        if launch.in_rank():  # the evidence, per rank, that every rank finished
            print(f"rank {launch.rank()}: {stage} finished", flush=True)
        if not launch.is_main_process():
            return None
        log_metrics(metrics)
        return metrics


def run_stage_cli(stages: tuple[str, ...], run: Callable, description: str, out_dir: str = "models",
                  trains: bool = False) -> tuple[str, dict | None]:
    """`python -m tasks.<module> <stage>` for modules that serve several stages (SFT, GRPO, sampling): validate
    params, open the stage's MLflow run, write into <out_dir>/<stage>, log the returned metrics. A stage ending in
    `_*` (e.g. `distill_*`) stands for each of its instances (`distill_tiny`). Training modules (`trains`) run
    under `accelerate launch` when `runtime` asks for it (see run_training)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("stage", help=f"one of {', '.join(stages)}")
    stage = parser.parse_args().stage
    family = next((s for s in stages if stage == s or (s.endswith("_*") and stage.startswith(s[:-1]))), None)
    if family is None:
        parser.error(f"unknown stage '{stage}'; this module runs {', '.join(stages)}")
    # An instance of a family is a DVC foreach stage (`distill_tiny` is `distill@tiny`): MLflow tags it by that name.
    dvc_stage = stage if family == stage else f"{family[:-2]}@{stage.removeprefix(family[:-1])}"
    params = load_params()
    try:
        section = params.stage_section(stage)
    except ValueError as exc:
        parser.error(str(exc))
    train = lambda: run(stage, section, params, Path(out_dir) / stage)  # noqa: E731
    if trains:  # `python -m tasks.sft ...` runs as __main__: its spec has the module's name
        return stage, run_training(dvc_stage, section, params, train, sys.modules[run.__module__].__spec__.name)
    with stage_run(dvc_stage, section, params.tracking.experiment):
        metrics = train()
        log_metrics(metrics)
    return stage, metrics


@contextmanager
def pipeline_run(experiment: str, name: str, flow_run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """The parent run of one pipeline execution; stages attach to it through the environment."""
    setup(experiment)
    tags = {"git_commit": git_commit(), "kind": "pipeline", **owner_tags()}
    if flow_run_id:
        tags["prefect_flow_run_id"] = flow_run_id
    with mlflow.start_run(run_name=name, tags=tags) as run:
        yield run


def lock_entry(stage: str, lock_file: Path = Path("dvc.lock")) -> dict[str, str]:
    """{path: md5} of a stage's deps and outs as recorded in dvc.lock."""
    if not lock_file.exists():
        return {}
    entry = (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {}).get(stage, {})
    return {item["path"]: item.get("md5", "") for key in ("deps", "outs") for item in entry.get(key, [])}


def tag_with_lock(parent_run_id: str, stage: str) -> None:
    """Tag the stage's run under this pipeline run with the dvc.lock hashes it produced (DVC writes the lock
    after the stage command exits, so the flow tags it). A stage DVC skipped as up to date has no run."""
    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.stage = '{stage}'",
                              output_format="list", search_all_experiments=True)
    for run in runs:
        mlflow.MlflowClient().set_tag(run.info.run_id, "dvc_lock", json.dumps(lock_entry(stage), sort_keys=True))
