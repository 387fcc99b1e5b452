"""dvc.yaml's code deps follow its rule: each stage lists exactly the tasks/ modules its command runs."""

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def imported_modules(path: Path) -> set[str]:
    """The tasks/ modules `path` imports anywhere in it (module level or inside a function), as repository paths."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in ("tasks", "tasks.blocks"):  # from tasks.blocks import x
            found |= {f"{node.module.replace('.', '/')}/{alias.name}.py" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tasks."):
            found.add(node.module.replace(".", "/") + ".py")
        elif isinstance(node, ast.Import):
            found |= {alias.name.replace(".", "/") + ".py" for alias in node.names if alias.name.startswith("tasks.")}
    return {module for module in found if (ROOT / module).is_file()}


def code_it_runs(module: str) -> set[str]:
    """`module` and every tasks/ module it imports, transitively."""
    todo, seen = [module], set()
    while todo:
        if (current := todo.pop()) not in seen:
            seen.add(current)
            todo += imported_modules(ROOT / current)
    return seen


@pytest.mark.parametrize("name", STAGES)
def test_a_stage_lists_exactly_the_code_it_runs(name):
    stage = STAGES[name].get("do", STAGES[name])  # a foreach stage's template
    module = re.search(r"python -m (tasks\.\w+)", stage["cmd"]).group(1).replace(".", "/") + ".py"
    listed = [dep for dep in stage["deps"] if str(dep).startswith("tasks/")]
    assert listed[0] == module, f"{name}: list its stage module {module} first"
    assert "tasks/blocks/params.py" in listed and "tasks/blocks/stage.py" in listed
    runs = code_it_runs(module)
    assert set(listed) == runs, f"{name}: missing {sorted(runs - set(listed))}, extra {sorted(set(listed) - runs)}"
