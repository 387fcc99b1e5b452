"""DVC remote storage between machines: push and pull through a local directory remote (what an S3 bucket is in
production), and the flow's `dvc_remote` stage commands handing outputs from one job's machine to the next."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.pipeline import stage_commands
from tests.workspace import git

# Two stages as in the recipe: a stage writing a model-like directory, the next one reading it. Each run of a stage
# appends its name to ../runs.log (outside the repository), so the test sees which stages really ran.
DVC_YAML = {"stages": {
    "base": {"cmd": "python write.py base", "deps": ["write.py"], "outs": ["models/base"]},
    "tuned": {"cmd": "python write.py tuned", "deps": ["write.py", "models/base"], "outs": ["models/tuned"]},
}}
WRITE_PY = """import sys
from pathlib import Path

stage = sys.argv[1]
out = Path("models") / stage
out.mkdir(parents=True, exist_ok=True)
parent = (Path("models/base/weights.bin").read_bytes() if stage == "tuned" else b"")
(out / "weights.bin").write_bytes(parent + bytes(range(256)) * 64 + stage.encode())
(out / "config.json").write_text('{"stage": "%s"}' % stage)
with open("../runs.log", "a") as log:
    log.write(stage + "\\n")
"""


def dvc(*args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def run_stage_job(stage: str, cwd: Path) -> str:
    """What one flow task does with dvc_remote=True, in a job's own checkout."""
    return "".join(dvc(*cmd[1:], cwd=cwd) for cmd in stage_commands(stage, dvc_remote=True))


def files(root: Path) -> dict[str, bytes]:
    """Every file of the outs under `root` (not the .gitignore DVC writes beside them)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".gitignore"}


@pytest.fixture
def origin(tmp_path):
    """A git + DVC repository with the two stages, a local directory as its default remote, committed."""
    repo = tmp_path / "machines" / "origin"
    repo.mkdir(parents=True)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    (repo / "write.py").write_text(WRITE_PY)
    git("init", "-q", cwd=repo)
    dvc("init", "-q", cwd=repo)
    dvc("remote", "add", "-d", "storage", str(tmp_path / "remote"), cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "pipeline", cwd=repo)
    return repo


def clone(origin: Path, name: str) -> Path:
    """A fresh machine: a clone of the repository, an empty DVC cache, the same remote."""
    dest = origin.parent / name
    git("clone", "-q", str(origin), str(dest), cwd=origin.parent)
    return dest


def test_outs_pushed_to_a_directory_remote_come_back_identical(origin):
    dvc("repro", cwd=origin)
    produced = files(origin / "models")
    dvc("push", cwd=origin)
    shutil.rmtree(origin / "models")
    shutil.rmtree(origin / ".dvc" / "cache")
    assert "not in cache:       models/base" in dvc("status", cwd=origin)  # nothing local any more
    dvc("pull", cwd=origin)
    assert files(origin / "models") == produced
    assert dvc("status", cwd=origin).strip().endswith("Data and pipelines are up to date.")


def test_each_stage_job_restores_its_inputs_from_the_remote_and_pushes_its_outputs(origin):
    runs = origin.parent / "runs.log"
    first = clone(origin, "gpu-node-1")
    run_stage_job("base", first)
    second = clone(origin, "gpu-node-2")  # shares no disk with the first: only the git commit and the remote
    out = run_stage_job("tuned", second)
    assert runs.read_text().split() == ["base", "tuned"]  # base was restored from the remote, not re-run
    assert "Stage 'base' is cached - skipping run, checking out outputs" in out
    assert files(second / "models" / "base") == files(first / "models" / "base")
    # A third machine (say, the evaluation job, or a laptop) gets both stages' outputs without running anything.
    third = clone(origin, "laptop")
    dvc("repro", "--pull", cwd=third)
    assert runs.read_text().split() == ["base", "tuned"]
    assert files(third / "models") == files(second / "models")



def test_stages_can_run_from_another_environment_than_the_flow(tmp_path, monkeypatch):
    # A GPU job: the flow runs from the Prefect environment, its stages from the vLLM one (they do not co-install).
    from flows.pipeline import STAGE_BIN_ENV, stage_env

    gpu_bin = tmp_path / ".venv-gpu" / "bin"
    gpu_bin.mkdir(parents=True)
    (gpu_bin / "dvc").write_text("#!/bin/sh\necho \"dvc from .venv-gpu: $@\"\n")
    (gpu_bin / "dvc").chmod(0o755)
    monkeypatch.setenv(STAGE_BIN_ENV, str(gpu_bin))
    env = stage_env("parent-run")
    result = subprocess.run(["dvc", "repro", "--single-item", "reasoning_rl"], env=env, capture_output=True, text=True)
    assert result.stdout == "dvc from .venv-gpu: repro --single-item reasoning_rl\n"
    monkeypatch.delenv(STAGE_BIN_ENV)
    assert stage_env("parent-run")["PATH"].startswith(f"{Path(sys.executable).parent}{os.pathsep}")
