import pytest
import yaml

from tasks.blocks.params import ParamsError, apply_overrides, load_params, read_yaml, validate


def test_repository_params_are_valid():
    params = load_params("params.yaml")
    assert params.reasoning_rl.num_generations >= 2


def test_every_section_of_the_schema_is_in_params_yaml():
    # params.yaml holds every hyperparameter: nothing is left to a hidden default.
    raw = read_yaml("params.yaml")
    dumped = validate(raw).model_dump()

    def keys(d, prefix=""):
        return {prefix + k for k in d} | {kk for k, v in d.items() if isinstance(v, dict)
                                          for kk in keys(v, f"{prefix}{k}.")}

    assert keys(dumped) == keys(raw)


@pytest.mark.parametrize("overrides, message", [
    ({"reasoning_rl.learning_rte": 1e-5}, "unknown key 'reasoning_rl.learning_rte' (did you mean 'learning_rate'?)"),
    ({"reasoning_rl.max_steps": "many"}, "reasoning_rl.max_steps"),
    ({"cold_start_sft.learning_rate": -1e-4}, "cold_start_sft.learning_rate"),
    ({"cold_start_sft.learning_rate": 0}, "cold_start_sft.learning_rate"),
    ({"reasoning_rl.learning_rate": 0}, "reasoning_rl.learning_rate: Input should be greater than 0 (got 0)"),
    ({"alignment_rl.learning_rate": -5e-5}, "alignment_rl.learning_rate: Input should be greater than 0"),
    ({"reward_model.learning_rate": "fast"}, "reward_model.learning_rate: Input should be a valid number"),
    ({"reasoning_rl.num_generations": 3}, "num_generations (3) must divide the generation batch"),
    ({"reasoning_rl.generation_batch_size": 12}, "generation_batch_size = 12"),
    ({"evaluate.top_p": 1.5}, "evaluate.top_p"),
    ({"evaluate.num_samples": 1}, "evaluate.num_samples: Input should be greater than or equal to 2"),
    ({"evaluate.limit": 1}, "evaluate.limit: Input should be greater than or equal to 2"),
    ({"evaluate.bootstrap_resamples": 10}, "evaluate.bootstrap_resamples"),
    ({"evaluate.prompted": {"b": {"model": "base", "template_of": "resft"}}},
     "evaluate.prompted.b.template_of: 'resft' is not a GRPO stage with a prompt_template"),
    ({"evaluate.prompted": {"base": {"model": "base", "template_of": "r1_zero"}}}, "already in evaluate.models"),
    ({"toy_world.cold_start_terse_fraction": 0.9}, "cold_start_terse_fraction + cold_start_french_fraction must not"),
    ({"toy_world.step_weights": [0.5, 0.5, 0.5, 0.5]}, "toy_world.step_weights"),
    ({"reasoning_rl.num_generations_eval": 3}, "num_generations_eval (3) must divide"),
    ({"base_model.source": "pretrained"}, "model_name_or_path is required"),
    ({"generation.backend": "tgi"}, "generation.backend"),
    ({"distill.students": {}}, "students is empty"),
    ({"distill.students": {"mini": {"hidden_size": 30}}}, "distill.students.mini: hidden_size (30) must be divisible"),
    ({"distill.students": {"mini": {"source": "pretrained"}}}, "distill.students.mini: model_name_or_path is required"),
    ({"evaluate.models": ["base", "distill_huge"]}, "evaluate.models names ['distill_huge']"),
    ({"student_rl.max_steps": 3}, "student_rl.max_steps (3) must equal reasoning_rl.max_steps"),
    ({"r1_zero.prompt_template": "no slot here"}, "prompt_template must contain the slot {prompt} exactly once"),
    ({"orchestration.retrain_cron": "0 25 * * *"}, "orchestration.retrain_cron: not a valid cron expression"),
    ({"orchestration.retrain_timezone": "Europe/Atlantis"}, "unknown time zone 'Europe/Atlantis'"),
    ({"promotion.gate.pass@1": "up"}, "promotion.gate.pass@1"),
    ({"promotion.tolerance": -0.1}, "promotion.tolerance"),
])
def test_bad_values_fail_with_a_message_naming_the_key(overrides, message):
    raw = apply_overrides(read_yaml("params.yaml"), overrides)
    with pytest.raises(ParamsError) as error:
        validate(raw)
    assert message in str(error.value)


def test_a_check_across_sections_names_its_keys_without_dumping_the_params():
    raw = apply_overrides(read_yaml("params.yaml"), {"reasoning_rl.max_steps": 7})
    with pytest.raises(ParamsError) as error:
        validate(raw, source="params.yaml")
    assert str(error.value) == ("invalid parameters:\n  params.yaml: student_rl.max_steps (80) must equal "
                                "reasoning_rl.max_steps (7): the distill-vs-RL comparison gives both one RL budget")


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\nreasoning_rl:\n  beta: [0.1\n")
    with pytest.raises(ParamsError, match=r"YAML syntax error at line \d+, column \d+"):
        load_params(bad)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")


def test_overrides_merge_dotted_keys_without_touching_the_original():
    raw = {"reasoning_rl": {"beta": 0.0}}
    merged = apply_overrides(raw, {"reasoning_rl.beta": 0.001, "evaluate.limit": 5})
    assert merged == {"reasoning_rl": {"beta": 0.001}, "evaluate": {"limit": 5}}
    assert raw == {"reasoning_rl": {"beta": 0.0}}
    assert validate(yaml.safe_load(yaml.safe_dump(merged))).reasoning_rl.beta == 0.001



def test_a_student_stage_gets_its_own_sft_params():
    params = validate(read_yaml("params.yaml"))
    tiny = params.stage_section("distill_tiny")
    assert tiny.model == "models/student_base/tiny" and tiny.data == params.distill.data
    assert tiny.epochs == params.distill.epochs
    with pytest.raises(ValueError, match="unknown student 'huge'"):
        params.stage_section("distill_huge")


def test_a_student_too_big_to_train_here_warns_at_once_and_a_fitting_one_does_not(recwarn):
    from tasks.blocks.params import Params

    huge = {"hidden_size": 32768, "num_layers": 64, "num_heads": 64, "intermediate_size": 131072}  # ~ 1 T parameters
    with pytest.warns(UserWarning, match=r"distill.students.huge: training it needs at least \d+\.\d GiB"):
        Params.model_validate({"distill": {"students": {"huge": huge}}, "evaluate": {"models": ["base"]}})
    recwarn.clear()
    Params.model_validate({})  # the toy students fit anywhere
    assert not [w for w in recwarn if "training it needs" in str(w.message)]


# ----------------------------------------------------------------------------- written once: schema, params.yaml, DVC

def test_the_schemas_defaults_are_params_yaml():
    # The schema states the toy world's defaults, params.yaml states them for DVC: any drift between them fails here.
    from tasks.blocks.params import defaults

    assert read_yaml("params.yaml") == defaults()
    assert validate({}).model_dump_json() == load_params("params.yaml").model_dump_json()


def test_dvc_reads_params_yaml_as_the_schema_does():
    # DVC parses params.yaml itself (ruamel, YAML 1.2): anchors, merge keys and number formats must mean the same.
    from dvc.utils.serialize import load_yaml

    assert load_yaml("params.yaml") == read_yaml("params.yaml")


def test_no_two_sections_of_params_yaml_share_a_mapping():
    # `dvc exp run --set-param` writes into the mapping it finds: a shared one (a bare alias, or a nested block a
    # merge key copied in) would carry one stage's override into every stage sharing it. Write `lora: {<<: *lora}`.
    seen: dict[int, str] = {}

    def walk(node, path):
        if isinstance(node, dict):
            assert id(node) not in seen, f"params.yaml: {path} is the same mapping as {seen[id(node)]}"
            seen[id(node)] = path
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else key)

    walk(read_yaml("params.yaml"), "")


@pytest.mark.parametrize("override", ["student_rl.lora.r=8", "cold_start_sft.lora.r=4", "r1_zero.rewards.format=0.5",
                                      "reasoning_rl.rewards.accuracy=2.0", "resft.epochs=2.0",
                                      "teacher_traces.top_p=0.9", "cold_start_sft.epochs=1.0"])
def test_dvc_set_param_changes_exactly_the_key_it_names(tmp_path, override):
    # What `dvc exp run --set-param` does to the file (the flow's overrides go through it), on a copy.
    from dvc.utils.hydra import apply_overrides as dvc_set_param

    copy = tmp_path / "params.yaml"
    copy.write_text(open("params.yaml").read())
    dvc_set_param(str(copy), [override])
    key, value = override.split("=")
    assert read_yaml(copy) == apply_overrides(read_yaml("params.yaml"), {key: yaml.safe_load(value)})


def test_a_partial_params_file_is_its_stages_defaults_plus_its_keys(tmp_path):
    from tasks.blocks.params import Params

    # A section left partial keeps its own stage's defaults, not its class's: teacher_traces samples alignment_rl.
    params = validate({"teacher_traces": {"num_prompts": 10}, "distill": {"students": {"mini": {"hidden_size": 16}}},
                       "evaluate": {"models": ["base", "distill_mini"]}})
    assert (params.teacher_traces.model, params.teacher_traces.num_prompts) == ("models/alignment_rl", 10)
    assert params.r1_zero.prompt_template == Params().r1_zero.prompt_template
    assert set(params.distill.students) == {"mini"}  # a mapping of names is replaced whole, never merged
    base = tmp_path / "base.yaml"
    base.write_text("seed: 1\nreasoning_rl:\n  max_steps: 7\nstudent_rl:\n  max_steps: 7\n")
    (tmp_path / "top.yaml").write_text("extends: base.yaml\nreasoning_rl:\n  beta: 0.5\n")
    top = load_params(tmp_path / "top.yaml")
    assert (top.seed, top.reasoning_rl.max_steps, top.reasoning_rl.beta, top.reasoning_rl.model) == (
        1, 7, 0.5, "models/cold_start_sft")
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ParamsError, match="cycle"):
        load_params(tmp_path / "loop.yaml")
