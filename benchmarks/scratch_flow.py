"""The flow on a recipe in a scratch copy of the repository: what `make smoke-real` and `make bench-real` share.

A fresh git + DVC repo (tests/workspace.py's `make_workspace`) with its own params.yaml, MLflow store and Prefect
home; this checkout's models/, data/, params.yaml and dvc.lock are not touched. `../shared/data` (the recipes' GSM8K)
is linked beside it, as from this checkout. The flow runs there as `make run` runs it, one DVC stage per task.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from tasks.blocks.params import apply_overrides, dump_params, read_params, validate

ROOT = Path(__file__).resolve().parents[1]


def recipe_params(recipe: Path, overrides: dict, what: str) -> dict:
    """The recipe with `overrides` (dotted keys), validated as the flow validates it: every key spelled out."""
    raw = apply_overrides(read_params(recipe), overrides)
    return yaml.safe_load(dump_params(validate(raw, source=f"{recipe} with {what}")))


@contextmanager
def scratch_base(keep: Path | None, prefix: str) -> Iterator[Path]:
    """The folder the workspace goes in: `keep` (kept), or a new temporary one, deleted when the block succeeds and
    kept for inspection (its path printed) when it fails."""
    base = keep or Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield base
    except BaseException:
        if keep is None:
            print(f"workspace kept for inspection: {base / 'repo'}", file=sys.stderr)
        raise
    if keep is None:
        shutil.rmtree(base, ignore_errors=True)


def prepare(base: Path, params: dict) -> tuple[Path, dict[str, str]]:
    """A scratch workspace `base`/repo with `params` as its params.yaml, and the environment its flow runs in."""
    from tests.workspace import make_workspace

    workspace = base / "repo"
    if workspace.exists():
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True)
    shared = base / "shared"  # the recipes' ../shared/data
    if not shared.exists():
        shared.symlink_to((ROOT.parent / "shared").resolve())
    make_workspace(workspace)
    (workspace / "plots" / "ladder.md").unlink(missing_ok=True)  # the toy run's, tracked: not this run's ladder
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workspace}/mlflow.db",
           "PREFECT_HOME": str(base / "prefect"), "PYTHONPATH": str(workspace),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return workspace, env


def rl_workspace(dest: Path, overrides: dict, source: Path) -> Path:
    """A scratch copy of the repository at `dest` with `overrides`, holding `source`'s cold start and toy data: what
    `python -m tasks.grpo reasoning_rl` reads there."""
    from tests.workspace import make_workspace

    make_workspace(dest, overrides)
    for path in ("models/cold_start_sft", "data/toy"):
        shutil.copytree(source / path, dest / path)
    return dest


def run_flow(workspace: Path, env: dict[str, str], stages: list[str] | None = None) -> tuple[int, float]:
    """`python -m flows.pipeline` (only `stages`, when given) in the workspace: its exit code and wall seconds."""
    cmd = [sys.executable, "-m", "flows.pipeline", *(["--stages", *stages] if stages else [])]
    start = time.monotonic()
    flow = subprocess.run(cmd, cwd=workspace, env=env, check=False)
    return flow.returncode, time.monotonic() - start


def stage_times(workspace: Path) -> dict[str, float]:
    """Each stage's wall time, from its MLflow run in the workspace's store, in the order the stages started."""
    code = ("import json, mlflow; runs = mlflow.search_runs(search_all_experiments=True, output_format='list'); "
            "print(json.dumps(sorted([(r.info.start_time, r.data.tags.get('stage'), "
            "((r.info.end_time or r.info.start_time) - r.info.start_time) / 1000) for r in runs "
            "if r.data.tags.get('stage')])))")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workspace}/mlflow.db"}
    out = subprocess.run([sys.executable, "-c", code], cwd=workspace, env=env, check=True, capture_output=True,
                         text=True).stdout
    return {stage: round(seconds, 1) for _, stage, seconds in json.loads(out.splitlines()[-1])}


def print_stage_times(times: dict[str, float], total: float) -> None:
    print("\nStage wall times (s, from each stage's MLflow run):")
    for stage, seconds in times.items():
        print(f"  {stage:34s} {seconds:7.1f}")
    print(f"Total (the flow, Prefect's start included): {total:.0f} s")
