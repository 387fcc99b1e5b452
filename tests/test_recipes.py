"""The real recipes (recipes/*.yaml): overlays on the defaults, valid params, R1's values, and a DVC pipeline wired to
the real data."""

import shutil
from pathlib import Path

import pytest
import yaml

from tasks.blocks.params import EXTENDS, Params, defaults, dump_params, load_params, read_yaml, section_type

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
GRPO_SECTIONS = ("reasoning_rl", "alignment_rl", "r1_zero", "student_rl")


def test_there_is_a_one_gpu_and_a_multi_gpu_recipe():
    assert {path.stem for path in RECIPES} >= {"qwen2.5-math-1.5b", "qwen2.5-math-1.5b-8gpu"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_a_recipe_states_only_what_differs_from_its_base(path):
    # An overlay: a key equal to its base's value says nothing. Sections that copy an anchored block (`<<: *name`)
    # may set a copied key back to the base's value, so they are left out of the check.
    raw = read_yaml(path)
    base = load_params(path.parent / raw[EXTENDS]).model_dump() if EXTENDS in raw else defaults()
    text = yaml.compose(path.read_text())
    copying = {key.value for key, value in text.value
               if isinstance(value, yaml.MappingNode) and any(k.value == "<<" for k, _ in value.value)}
    raw.pop(EXTENDS, None)

    def same(changes: dict, base: dict, model, prefix: str) -> list[str]:
        out = []
        for key, value in changes.items():
            section = section_type(model, key)
            if section and isinstance(value, dict):
                out += same(value, base[key], section, f"{prefix}{key}.")
            elif value == base[key]:
                out.append(prefix + key)
        return out

    redundant = [key for key in same(raw, base, Params, "") if key.split(".")[0] not in copying]
    assert not redundant, f"{path.name} restates its base's values: {redundant}"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_a_recipe_is_valid_params_with_r1s_values(path):
    params = load_params(path)  # a typo or an impossible value fails here, naming the key

    assert params.base_model.source == "pretrained" and params.base_model.model_name_or_path
    assert "<think>" in params.prompt.system and "\\boxed{}" in params.prompt.system  # R1's format, by prompt
    for name in GRPO_SECTIONS:
        rl = getattr(params, name)
        assert rl.beta == 0.001, name
        # R1's 16 samples per prompt on a GPU; a CPU recipe (smollm2-135m) takes fewer, but a group all the same.
        assert rl.num_generations == 16 if params.runtime.device == "cuda" else rl.num_generations >= 4, name
    for name in ("reasoning_rl", "r1_zero", "student_rl"):
        assert getattr(params, name).temperature == 1.0, name
    ev = params.evaluate
    assert (ev.temperature, ev.top_p) == (0.6, 0.95) and ev.num_samples > 1  # pass@1 over k samples
    assert ev.data.startswith("data/real/")

    # Every data path under data/real/ is an out of a real_data stage of this recipe.
    sources = params.real_data.sources
    assert {"gsm8k_train", "gsm8k_test"} <= set(sources)
    assert Path(ev.data).parts[2] in sources  # evaluation on one of them: MATH-500 on a GPU, GSM8K test on the CPU
    real_paths = [value for section in params.model_dump().values() if isinstance(section, dict)
                  for value in section.values() if isinstance(value, str) and value.startswith("data/real/")]
    assert real_paths and all(Path(p).parts[2] in sources for p in real_paths), real_paths


def test_the_cpu_recipe_runs_smollm2_as_make_smollm2_writes_it_on_a_fixed_gsm8k_subset():
    from tasks import smollm2

    params = load_params(ROOT / "recipes" / "smollm2-135m.yaml")
    assert params.runtime.device == "cpu"
    assert ROOT / params.base_model.model_name_or_path == smollm2.model_dir(ROOT / ".cache" / "real")
    assert params.evaluate.data == "data/real/gsm8k_test/problems.jsonl" and params.evaluate.limit
    assert params.cold_start_sft.data == "data/real/gsm8k_train/cold_start.jsonl"
    assert params.reasoning_rl.data == params.rejection_sampling.data == "data/real/gsm8k_train/problems.jsonl"
    # SmolLM2's ChatML template has no {% generation %} markers and TRL has no training copy of it.
    dump = params.model_dump()
    assert not [name for name, section in dump.items() if isinstance(section, dict) and
                section.get("assistant_only_loss")]
    assert params.student_rl.max_steps == params.reasoning_rl.max_steps


def test_the_multi_gpu_recipe_launches_processes_with_zero2_and_r1s_batch():
    params = load_params(ROOT / "recipes" / "qwen2.5-math-1.5b-8gpu.yaml")
    assert params.runtime.num_processes > 1
    assert params.runtime.accelerate_config == "configs/accelerate/zero2.yaml"
    rl = params.reasoning_rl
    completions = rl.per_device_train_batch_size * params.runtime.num_processes * rl.gradient_accumulation_steps
    assert (completions, completions // rl.num_generations) == (512, 32)  # R1: 32 questions x 16 samples per step


def dvc_graph(params_file: Path, workspace: Path) -> dict[str, set[str]]:
    """Each stage of dvc.yaml with `params_file` as params.yaml -> the stages it depends on."""
    from dvc.repo import Repo

    workspace.mkdir()
    shutil.copy(ROOT / "dvc.yaml", workspace / "dvc.yaml")
    (workspace / "params.yaml").write_text(dump_params(load_params(params_file)))  # as the flow writes a recipe
    Repo.init(str(workspace), no_scm=True).close()
    with Repo(str(workspace)) as repo:
        graph = repo.index.graph
        return {stage.name: {dep.name for dep in graph.successors(stage)} for stage in repo.index.stages}


def test_the_toy_dag_has_no_real_data_stage_and_a_recipes_dag_runs_on_the_real_data(tmp_path):
    toy = dvc_graph(ROOT / "params.yaml", tmp_path / "toy")
    assert not [stage for stage in toy if stage.startswith("real_data")]
    for recipe in RECIPES:
        dag = dvc_graph(recipe, tmp_path / recipe.stem)
        sources = load_params(recipe).real_data.sources
        assert {f"real_data@{name}" for name in sources} <= set(dag)
        assert "real_data@gsm8k_train" in dag["cold_start_sft"] and "real_data@gsm8k_train" in dag["reasoning_rl"]
        assert f"real_data@{Path(load_params(recipe).evaluate.data).parts[2]}" in dag["evaluate@base"]
