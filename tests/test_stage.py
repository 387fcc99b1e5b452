"""The stage runner: every stage command (as dvc.yaml runs it) reaches `run_stage` with the stage's name, the name
its module's `run` gets, its params section and where it writes."""

import importlib
import shutil
import sys
from pathlib import Path

import pytest

from tasks.blocks import stage
from tasks.blocks.params import load_params

ROOT = Path(__file__).resolve().parents[1]

# command -> (name in dvc.yaml and MLflow, the name `run` gets, its params section, out, trains)
COMMANDS = {
    "prepare_data": ("prepare_data", "prepare_data", "toy_world", "data/toy", False),
    "base_model": ("base_model", "base_model", "base_model", "models/base", False),
    "base_model --student tiny": ("student_base@tiny", "student_base_tiny", "distill.students.tiny",
                                  "models/student_base/tiny", False),
    "sft cold_start_sft": ("cold_start_sft", "cold_start_sft", "cold_start_sft", "models/cold_start_sft", True),
    "sft distill_tiny": ("distill@tiny", "distill_tiny", "distill_tiny", "models/distill_tiny", True),
    "grpo reasoning_rl": ("reasoning_rl", "reasoning_rl", "reasoning_rl", "models/reasoning_rl", True),
    "rejection_sampling teacher_traces": ("teacher_traces", "teacher_traces", "teacher_traces",
                                          "data/teacher_traces", False),
    "reward_model": ("reward_model", "reward_model", "reward_model", "models/reward_model", True),
    "evaluate base": ("evaluate@base", "base", "evaluate", "metrics", False),
    "evaluate base_r1_zero_prompt": ("evaluate_prompted@base_r1_zero_prompt", "base_r1_zero_prompt", "evaluate",
                                     "metrics", False),
    "register": ("register", "register", "registry", "metrics/registry.json", False),
    "report": ("report", "report", "tracking", "reports", False),
}


def section(params, key: str):
    if key.startswith("distill_"):
        return params.stage_section(key)
    value = params
    for part in key.split("."):
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


@pytest.mark.parametrize("command", COMMANDS)
def test_every_stage_command_runs_its_stage_through_the_runner(command, tmp_path, monkeypatch):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)  # what a module writes after its stage (metrics files) lands here
    module_name, *args = command.split()
    module = importlib.import_module(f"tasks.{module_name}")
    calls = []

    def fake_run_stage(name, key, p, params, run, out, *, trains=False, tags=None, artifacts=()):
        calls.append((name, key, p, Path(out), trains, run))
        return None if trains else {}

    monkeypatch.setattr(stage, "run_stage", fake_run_stage)
    if hasattr(module, "run_stage"):
        monkeypatch.setattr(module, "run_stage", fake_run_stage)
    monkeypatch.setattr(sys, "argv", [module_name, *args])
    module.main()
    name, key, section_key, out, trains = COMMANDS[command]
    params = load_params()
    assert calls == [(name, key, section(params, section_key), Path(out), trains, module.run)]
