import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import scratch_flow, smollm2
from benchmarks.run import GRPO_OVERRIDES
from tasks.blocks.params import apply_overrides, read_yaml, validate
from tests.workspace import ROOT


def test_the_grpo_benchmarks_params_are_valid():
    # `make bench` runs our GRPO stage on these overrides of params.yaml: a cross-field check they break (student_rl
    # shares reasoning_rl's step budget) would stop the benchmark after a whole pipeline run, not here.
    params = validate(apply_overrides(read_yaml(ROOT / "params.yaml"), GRPO_OVERRIDES), source="benchmarks/run.py")
    assert params.reasoning_rl.max_steps == GRPO_OVERRIDES["reasoning_rl.max_steps"]


def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_real_model_benchmark_and_smoke_params_are_valid(tmp_path):
    # `make bench-real` and `make smoke-real` (each needs the 260 MB SmolLM2 directory, so neither runs here) validate
    # their overlays of recipes/smollm2-135m.yaml before any work; a key the recipe or the params lost fails here.
    bench = smollm2.bench_params(tmp_path / "smollm2")
    assert bench["evaluate"]["models"] == smollm2.MODELS
    assert bench["reasoning_rl"]["max_steps"] == smollm2.RL_STEPS == bench["student_rl"]["max_steps"]
    smoke = load_script(ROOT / "scripts" / "smoke_real.py").smoke_params(tmp_path / "smollm2")
    assert smoke["base_model"]["model_name_or_path"] == str(tmp_path / "smollm2")


def test_the_real_model_benchmark_runs_only_its_stages_of_the_recipes_dag(tmp_path):
    # The stages it hands the flow exist in the scratch workspace's DAG under its params (the evaluation's deps, the
    # reward model among them, included), in DAG order, and nothing downstream of them runs.
    workspace, env = scratch_flow.prepare(tmp_path, smollm2.bench_params(tmp_path / "smollm2"))
    code = f"from flows.pipeline import select_stages; print(*select_stages({smollm2.STAGES!r}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=workspace, env=env, check=True, capture_output=True,
                         text=True).stdout.split()
    assert sorted(out) == sorted(smollm2.STAGES)
    assert out.index("base_model") < out.index("reward_model") < out.index("evaluate@base") < out.index("ladder")
    assert (workspace.parent / "shared").is_symlink()


def test_a_scratch_workspace_is_deleted_after_success_and_kept_after_a_failure(tmp_path, capsys):
    with scratch_flow.scratch_base(None, "r1-test-") as base:
        (base / "repo").mkdir()
    assert not base.exists()
    with pytest.raises(SystemExit), scratch_flow.scratch_base(None, "r1-test-") as failed:
        sys.exit("error: the flow failed")
    assert failed.exists() and str(failed / "repo") in capsys.readouterr().err
    with scratch_flow.scratch_base(tmp_path / "keep", "r1-test-") as kept:  # --keep: kept after success too
        kept.mkdir()
    assert kept.exists()


def test_the_held_out_rl_comparison_reads_its_arms_and_pairs_its_deltas():
    # scripts/rl_held_out.py (RESULTS.md's choices of reasoning RL's params): an arm is name[:key=value,...] with
    # YAML values, a malformed one stops before any training; deltas are paired per problem, with +-2 SE.
    rl = load_script(ROOT / "scripts" / "rl_held_out.py")
    assert rl.parse_arm("default") == ("default", {})
    assert rl.parse_arm("steps160:reasoning_rl.max_steps=160,student_rl.max_steps=160") == (
        "steps160", {"reasoning_rl.max_steps": 160, "student_rl.max_steps": 160})
    lr = rl.parse_arm("lr:reasoning_rl.learning_rate=1e-4")[1]  # written into the copy's params.yaml, validated there
    params = validate(apply_overrides(read_yaml(ROOT / "params.yaml"), lr), source="arm")
    assert params.reasoning_rl.learning_rate == 1e-4
    with pytest.raises(SystemExit, match="expected <dotted.key>=<value>"):
        rl.parse_arm("bad:reasoning_rl.max_steps")
    d = rl.compare([0.0, 0.5, 1.0, 0.25], [0.5, 0.5, 1.0, 0.75])
    assert d["delta"] == 0.25 and d["ci95"][0] <= 0.25 <= d["ci95"][1] and d["two_se"] > 0
