"""MLflow, and only MLflow: the tracking store and its URL (credentials masked), orphan-run reaping, params
flattening, metric logging, the pipeline's parent run and its dvc.lock tags. Each stage opens its own child run through
the stage runner (tasks/blocks/stage.py).

The tracking store defaults to `sqlite:///mlflow.db` in the repository (MLflow's file store is deprecated and
raises); `MLFLOW_TRACKING_URI` points elsewhere. A flow passes the parent run id and its own flow-run id through
the environment, so a stage run by `dvc repro` alone still works: it then starts a top-level run.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import mlflow
import psutil
from pydantic import BaseModel

from tasks.blocks.dvc_files import lock_entry

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PARENT_RUN_ENV = "R1_PARENT_RUN_ID"
FLOW_RUN_ENV = "R1_FLOW_RUN_ID"
# Tags naming the process that owns a run: a run still RUNNING whose process is gone was killed (SIGKILL, OOM, power).
PID_TAG, HOST_TAG = "pid", "host"
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


def metric_name(key: str) -> str:
    """MLflow does not allow '@' in metric or tag names: pass@1 -> pass_at_1."""
    return key.replace("@", "_at_")


def log_metrics(metrics: dict) -> None:
    """Log the numeric entries of a metrics dict."""
    mlflow.log_metrics({metric_name(k): v for k, v in metrics.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})


@contextmanager
def pipeline_run(experiment: str, name: str, flow_run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """The parent run of one pipeline execution; stages attach to it through the environment."""
    setup(experiment)
    tags = {"git_commit": git_commit(), "kind": "pipeline", **owner_tags()}
    if flow_run_id:
        tags["prefect_flow_run_id"] = flow_run_id
    with mlflow.start_run(run_name=name, tags=tags) as run:
        yield run


def tag_with_lock(parent_run_id: str, stage: str) -> None:
    """Tag the stage's run under this pipeline run with the dvc.lock hashes it produced (DVC writes the lock
    after the stage command exits, so the flow tags it). A stage DVC skipped as up to date has no run."""
    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.stage = '{stage}'",
                              output_format="list", search_all_experiments=True)
    for run in runs:
        mlflow.MlflowClient().set_tag(run.info.run_id, "dvc_lock", json.dumps(lock_entry(stage), sort_keys=True))
