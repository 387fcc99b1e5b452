"""What DVC's files say about a stage: the deps dvc.yaml lists for it, the hashes dvc.lock records for it, and
whether `dvc status` finds it stale."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

LOCK_FILE = Path("dvc.lock")


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


def stale_stages(stages: list[str], env: dict[str, str] | None = None) -> set[str]:
    """The stages `dvc status` reports changed (deps, outs, params or command), in one call; `env`: the environment
    to run `dvc` in (a flow passes its stages', whose PATH has the `dvc` that runs them). RuntimeError if DVC fails."""
    done = subprocess.run(["dvc", "status", "--json", *stages], capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"dvc status failed (exit code {done.returncode}): {done.stderr.strip()[-2000:]}")
    return set(json.loads(done.stdout or "{}"))


def lock_stages(lock_file: Path = LOCK_FILE) -> dict[str, dict]:
    """The `stages` of dvc.lock, in its order: {stage: {cmd, deps, params, outs}}; none without a lock file."""
    if not lock_file.exists():
        return {}
    return (yaml.safe_load(lock_file.read_text()) or {}).get("stages", {})


def lock_entry(stage: str, lock_file: Path = LOCK_FILE) -> dict[str, str]:
    """{path: md5} of a stage's deps and outs as recorded in dvc.lock."""
    entry = lock_stages(lock_file).get(stage, {})
    return {item["path"]: item.get("md5", "") for key in ("deps", "outs") for item in entry.get(key, [])}


def lock_outs(lock_file: Path = LOCK_FILE) -> dict[str, dict[str, str]]:
    """{stage: {out path: md5}} from dvc.lock, in its order."""
    return {name: {out["path"]: out.get("md5", "") for out in entry.get("outs", [])}
            for name, entry in lock_stages(lock_file).items()}
