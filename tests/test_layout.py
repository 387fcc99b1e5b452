"""The layout shows the architecture, and stays so: stage modules in tasks/, building blocks in tasks/blocks/, a block
never imports a stage, and no two modules import each other, directly or through others (imports inside functions
count: they run on some path)."""

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tasks"


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """{dotted name: file} of every module of the package (its __init__ files aside)."""
    return {".".join(path.relative_to(package.parent).with_suffix("").parts): path
            for path in sorted(package.rglob("*.py")) if path.name != "__init__.py"}


def imports(path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # from tasks.blocks import models
    return found & known


def import_graph(package: Path = PACKAGE) -> nx.DiGraph:
    found = modules(package)
    graph = nx.DiGraph()
    graph.add_nodes_from(found)
    for name, path in found.items():
        graph.add_edges_from((name, imported) for imported in imports(path, set(found)) if imported != name)
    return graph


def cycles(graph: nx.DiGraph) -> list[list[str]]:
    return sorted(sorted(cycle) for cycle in nx.simple_cycles(graph))


def is_block(name: str) -> bool:
    return name.startswith("tasks.blocks.")


def test_no_module_of_tasks_imports_itself_through_others():
    found = cycles(import_graph())
    assert not found, f"import cycles (module-level and function-level imports): {found}"


def test_a_block_never_imports_a_stage_module():
    graph = import_graph()
    wrong = sorted((a, b) for a, b in graph.edges if is_block(a) and not is_block(b))
    assert not wrong, f"blocks importing stage modules: {wrong}"


def test_the_checks_see_a_cycle_and_a_block_importing_a_stage(tmp_path):
    package = tmp_path / "tasks"
    (package / "blocks").mkdir(parents=True)
    (package / "sft.py").write_text("from tasks.blocks import models\n")
    (package / "evaluate.py").write_text("")
    (package / "blocks" / "models.py").write_text("def save():\n    from tasks.blocks.tracking import log\n")
    (package / "blocks" / "tracking.py").write_text("from tasks.blocks import models\nimport tasks.evaluate\n")
    graph = import_graph(package)
    assert cycles(graph) == [["tasks.blocks.models", "tasks.blocks.tracking"]]
    wrong = [(a, b) for a, b in graph.edges if is_block(a) and not is_block(b)]
    assert wrong == [("tasks.blocks.tracking", "tasks.evaluate")]


def test_stage_modules_and_blocks_are_apart():
    """Every module that dvc.yaml, the Makefile or a user runs with `python -m tasks.<name>` is a stage (or entry
    point) in tasks/; the rest is in tasks/blocks/."""
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
    commands = [stage.get("do", stage)["cmd"] for stage in stages]
    run = {cmd.split()[2] for cmd in commands}
    assert run <= {name for name in modules() if not is_block(name)}
