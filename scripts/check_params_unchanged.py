"""Check that a change of params files or schema changes no value: params.yaml and each recipe at REV and now.

    python scripts/check_params_unchanged.py --base main

For each file it compares what the stages read (the schema at REV on the file at REV against the schema now on the
file now: `load_params(...).model_dump_json()`, section by section, so key order and types count too) and what DVC
reads (DVC's own YAML loader on params.yaml; for a recipe, on the params.yaml the flow writes for it: the file itself
before recipes were overlays, its complete params after, where a key the old file left to the schema's default is
now spelled out: listed, not a failure, since the stages read that value already). Exit code 0: nothing differs;
1: what differs is printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

from dvc.utils.serialize import load_yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.blocks import params as current  # noqa: E402  (after the repository root is on the path)


def git_show(rev: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


def schema_at(rev: str, tmp: Path):
    """The params schema as it was at `rev` (tasks/blocks/params.py, tasks/params.py before the blocks moved),
    imported under another name."""
    source = tmp / "params_at_rev.py"
    try:
        source.write_text(git_show(rev, "tasks/blocks/params.py"))
    except subprocess.CalledProcessError:
        source.write_text(git_show(rev, "tasks/params.py"))
    spec = importlib.util.spec_from_file_location("params_at_rev", source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="the revision to compare with (default: main)")
    args = parser.parse_args()
    problems, notes = [], []
    with tempfile.TemporaryDirectory(prefix="r1-params-") as tmp:
        tmp = Path(tmp)
        old_schema = schema_at(args.base, tmp)
        names = ["params.yaml", *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "recipes").glob("*.yaml")))]
        for name in names:  # every old file first: a recipe may extend one that sorts after it
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(git_show(args.base, name))
        for name in names:
            old_file = tmp / name
            old, new = old_schema.load_params(old_file), current.load_params(ROOT / name)
            before = len(problems)
            for section in type(new).model_fields:
                a, b = getattr(old, section, None), getattr(new, section)
                dump = [x.model_dump_json() if hasattr(x, "model_dump_json") else repr(x) for x in (a, b)]
                if dump[0] != dump[1]:
                    problems.append(f"{name}: {section} as the stages read it:\n    {dump[0]}\n    {dump[1]}")
            dvc_new = ROOT / name
            if name != "params.yaml":  # what the flow writes as params.yaml for the recipe's run
                dvc_new = tmp / "written.yaml"
                dvc_new.write_text(current.dump_params(new))
            for line in differences(load_yaml(old_file), load_yaml(dvc_new)):
                spelled_out = name != "params.yaml" and ": '<absent>' -> " in line
                (notes if spelled_out else problems).append(f"{name}: as DVC reads it: {line}")
            print(f"{name}: {'differs' if len(problems) > before else 'same values'}")
    print("\n".join(f"{note} (the schema's default, now spelled out)" for note in notes))
    print("\n".join(problems) if problems else f"no value differs from {args.base}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
