"""Flow helpers that need no Prefect server: overrides, validation, the bad-input report of a stage."""

import re

import pytest

from flows.pipeline import parse_overrides, validated_params
from tasks import tracking
from tasks.data import DataError
from tasks.params import ParamsError


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
    monkeypatch.setenv(tracking.BAD_INPUT_ENV, str(report))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    with pytest.raises(RuntimeError):
        with tracking.stage_run("prepare_data", tracking.load_params().toy_world, "test"):
            raise RuntimeError("a crash is not bad input")
    assert not report.exists()
    with pytest.raises(DataError):
        with tracking.stage_run("prepare_data", tracking.load_params().toy_world, "test"):
            raise DataError("data/toy/train.jsonl:3: broken JSON line")
    assert report.read_text() == "DataError: data/toy/train.jsonl:3: broken JSON line\n"
