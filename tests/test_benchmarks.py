from benchmarks.run import GRPO_OVERRIDES
from tasks.blocks.params import apply_overrides, read_yaml, validate
from tests.workspace import ROOT


def test_the_grpo_benchmarks_params_are_valid():
    # `make bench` runs our GRPO stage on these overrides of params.yaml: a cross-field check they break (student_rl
    # shares reasoning_rl's step budget) would stop the benchmark after a whole pipeline run, not here.
    params = validate(apply_overrides(read_yaml(ROOT / "params.yaml"), GRPO_OVERRIDES), source="benchmarks/run.py")
    assert params.reasoning_rl.max_steps == GRPO_OVERRIDES["reasoning_rl.max_steps"]
