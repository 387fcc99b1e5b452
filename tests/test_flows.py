"""Flow helpers that need no Prefect server: overrides, validation, the bad-input report of a stage."""

import re

import pytest

from flows import pipeline
from flows.pipeline import parse_overrides, recipe_params, validated_params
from tasks.blocks import stage
from tasks.blocks.data import DataError
from tasks.blocks.dvc_files import stale_stages
from tasks.blocks.params import ParamsError, dump_params, load_params, validate


def test_overrides_use_the_dvc_set_param_syntax_with_yaml_values():
    assert parse_overrides(["reasoning_rl.learning_rate=5e-7", "evaluate.limit=5", "evaluate.models=[base]",
                            "prompt.system=Think step by step"]) == {
        "reasoning_rl.learning_rate": "5e-7", "evaluate.limit": 5, "evaluate.models": ["base"],
        "prompt.system": "Think step by step"}
    assert validated_params(["reasoning_rl.learning_rate=5e-7"]).reasoning_rl.learning_rate == 5e-7


@pytest.mark.parametrize("overrides, message", [
    (["reasoning_rl.learning_rate"], "expected <dotted.key>=<value>"),
    (["=5"], "expected <dotted.key>=<value>"),
    (["reasoning_rl.learning_rate=-1"], "reasoning_rl.learning_rate"),
    (["evaluate.top_p=2"], "evaluate.top_p"),
])
def test_bad_overrides_are_rejected_with_a_message_naming_them(overrides, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
        validated_params(overrides)


def test_a_stage_reports_bad_input_to_the_flow(tmp_path, monkeypatch):
    report = tmp_path / "bad_input.txt"
    monkeypatch.setenv(stage.BAD_INPUT_ENV, str(report))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(RuntimeError):
        with stage.stage_run("prepare_data", load_params().toy_world, "test"):
            raise RuntimeError("a crash is not bad input")
    assert not report.exists()
    with pytest.raises(DataError):
        with stage.stage_run("prepare_data", load_params().toy_world, "test"):
            raise DataError("data/toy/train.jsonl:3: broken JSON line")
    assert report.read_text() == "DataError: data/toy/train.jsonl:3: broken JSON line\n"


def test_a_recipe_is_chosen_by_name_and_validated_with_its_overrides():
    params = validated_params(None, "qwen2.5-math-1.5b")
    assert params.base_model.model_name_or_path == "Qwen/Qwen2.5-Math-1.5B"
    overridden = validated_params(["reasoning_rl.max_steps=5", "student_rl.max_steps=5"], "qwen2.5-math-1.5b")
    assert (overridden.reasoning_rl.max_steps, overridden.reasoning_rl.beta) == (5, 0.001)
    with pytest.raises(ParamsError, match=re.escape("unknown recipe 'qwen-typo'; recipes/ has [")) as error:
        validated_params(None, "qwen-typo")
    assert "'qwen2.5-math-1.5b'" in str(error.value)


def test_a_bad_recipe_fails_naming_its_file_and_key(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "RECIPES_DIR", tmp_path)
    (tmp_path / "bad.yaml").write_text("reasoning_rl:\n  betta: 0.001\n")
    with pytest.raises(ParamsError, match=re.escape(f"{tmp_path / 'bad.yaml'}: unknown key 'reasoning_rl.betta' "
                                                    "(did you mean 'beta'?)")):
        validated_params(None, "bad")


def test_the_recipe_is_params_yaml_while_the_pipeline_runs_then_put_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "real.yaml").write_text("seed: 1\n")
    (tmp_path / "params.yaml").write_text("seed: 42\n")
    with pytest.raises(RuntimeError, match="stage crashed"):
        with recipe_params("real"):
            # What `dvc exp run` reads: the recipe over the defaults, every key spelled out (DVC reads no schema).
            assert (tmp_path / "params.yaml").read_text() == dump_params(validate({"seed": 1}))
            raise RuntimeError("stage crashed")
    assert (tmp_path / "params.yaml").read_text() == "seed: 42\n"
    with recipe_params(None):  # no recipe: params.yaml as it is
        assert (tmp_path / "params.yaml").read_text() == "seed: 42\n"


def test_the_cli_passes_the_recipe_and_overrides_to_the_flow(monkeypatch):
    calls = []
    monkeypatch.setattr(pipeline, "pipeline", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr("sys.argv", ["flows.pipeline", "--recipe", "qwen2.5-math-1.5b", "--set", "evaluate.limit=50"])
    pipeline.main()
    assert calls == [{"stages": None, "overrides": ["evaluate.limit=50"], "recipe": "qwen2.5-math-1.5b",
                      "dvc_remote": False}]


def test_the_run_form_offers_the_real_stage_and_recipe_names():
    from flows.serve import deployments

    form = deployments()[0]._parameter_openapi_schema.properties  # what the Prefect UI builds the run form from
    stages = form["stages"]["anyOf"][0]["items"]["enum"]
    assert stages[:3] == ["prepare_data", "base_model", "cold_start_sft"] and stages.count("report") == 1
    assert {"evaluate@distill_tiny", "real_data@math500", "distill@qwen05b"} <= set(stages)  # toy and recipe DAGs
    assert form["recipe"]["anyOf"][0]["enum"] == ["qwen2.5-math-1.5b", "qwen2.5-math-1.5b-8gpu", "smollm2-135m"]
    assert "enum" not in form["overrides"]["anyOf"][0]["items"]  # free text: any dotted.key=value


def test_the_flow_skips_only_the_up_to_date_stages_before_the_first_stale_one():
    order = ["prepare_data", "base_model", "cold_start_sft", "evaluate@base", "report"]
    assert pipeline.from_first_stale(order, set()) == []  # a no-op run starts no `dvc repro`
    assert pipeline.from_first_stale(order, {"cold_start_sft"}) == ["cold_start_sft", "evaluate@base", "report"]
    # evaluate@base is up to date before cold_start_sft runs; it still goes through DVC, which decides then.
    assert pipeline.from_first_stale(order, {"prepare_data", "report"}) == order


def test_stale_stages_are_what_dvc_status_reports(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(["dvc", "init", "-q"], check=True)
    (tmp_path / "dvc.yaml").write_text("stages:\n  a:\n    cmd: echo a > a.txt\n    outs: [a.txt]\n"
                                       "  b:\n    cmd: cat a.txt > b.txt\n    deps: [a.txt]\n    outs: [b.txt]\n")
    assert stale_stages(["a", "b"]) == {"a", "b"}
    # The stages' environment decides which `dvc` answers (a flow started without the venv on its PATH).
    with pytest.raises(FileNotFoundError):
        stale_stages(["a"], {"PATH": str(tmp_path / "nowhere")})
    subprocess.run(["dvc", "repro", "-q"], check=True)
    assert stale_stages(["a", "b"]) == set()
    (tmp_path / "b.txt").write_text("edited\n")
    assert stale_stages(["a", "b"]) == {"b"}
