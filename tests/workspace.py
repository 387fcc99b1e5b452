"""A throwaway copy of the repository (tracked files only) as a fresh git + DVC repo, for tests and benchmarks."""

import shutil
import subprocess
from pathlib import Path

import yaml

from tasks.blocks.params import apply_overrides, read_yaml

ROOT = Path(__file__).resolve().parents[1]
GIT_IDENTITY = ["-c", "user.name=r1-pipeline test", "-c", "user.email=test@r1-pipeline.invalid"]


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *GIT_IDENTITY, *args], cwd=cwd, check=True, capture_output=True)


def make_workspace(dest: Path, overrides: dict | None = None) -> Path:
    """Copy the repository's tracked (and not ignored) files to `dest`, apply dotted params overrides, commit."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    raw = apply_overrides(read_yaml(ROOT / "params.yaml"), overrides or {})
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    git("init", "-q", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-qm", "workspace", cwd=dest)
    return dest
