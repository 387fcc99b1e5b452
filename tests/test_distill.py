"""Distillation (R1 stage 6): student bases, the students' SFT on the teacher's data, and the stages DVC makes of
them."""

import json
import subprocess
import sys
import warnings

import pytest
import torch
from transformers import LlamaForCausalLM

from tasks import base_model, sft
from tasks.blocks import models
from tasks.blocks.data import DataError
from tasks.blocks.params import validate
from tests.tiny import TINY, build_tiny_model
from tests.workspace import make_workspace

TINY_BASE = {k: v for k, v in TINY.model_dump().items() if k != "max_position_embeddings"}


def test_each_student_in_params_becomes_its_own_dvc_stages(tmp_path):
    students = {"mini": {"hidden_size": 16, "num_heads": 2}, "micro": {"hidden_size": 8, "num_heads": 2}}
    workspace = make_workspace(tmp_path / "repo", {"distill.students": students,
                                                   "evaluate.models": ["base", "distill_mini", "distill_micro"]})
    listed = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=workspace, check=True,
                            capture_output=True, text=True).stdout.split()
    for student in students:
        assert f"student_base@{student}" in listed and f"distill@{student}" in listed
    assert not any(s.endswith("@small") or s.endswith("@tiny") for s in listed)  # the defaults are gone
    assert "evaluate@distill_mini" in listed and "evaluate@distill_small" not in listed


def test_student_base_is_a_smaller_model_with_the_base_tokenizer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build_tiny_model(tmp_path / "models" / "base")
    corpus = [{"id": f"c{i}", "text": f"Problem: Ana has {i} pens. She buys 2 more.\nSolution:\n{i} + 2 = {i + 2}."
                                       f"\nAnswer: {i + 2}"} for i in range(40)]
    (tmp_path / "data" / "toy").mkdir(parents=True)
    (tmp_path / "data" / "toy" / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    params = validate({"runtime": {"device": "cpu"},
                       "base_model": {**TINY_BASE, "epochs": 1.0, "batch_size": 8, "seq_len": 32},
                       "distill": {"students": {"mini": {"hidden_size": 16, "num_layers": 1}}},
                       "evaluate": {"models": ["base"]}})
    out = tmp_path / "models" / "student_base" / "mini"
    metrics = base_model.run("student_base_mini", params.distill.students["mini"], params, out)
    assert metrics["parameters"] == models.count_parameters_on_disk(out)
    assert models.count_parameters_on_disk(out) < models.count_parameters_on_disk(tmp_path / "models" / "base")
    assert models.load_tokenizer(out).get_vocab() == models.load_tokenizer(tmp_path / "models" / "base").get_vocab()
    assert json.loads((out / "provenance.json").read_text())["stage"] == "student_base@mini"


def test_count_parameters_on_disk_matches_the_loaded_model(tiny):
    loaded = models.load_model(tiny, validate({}).runtime)
    assert models.count_parameters_on_disk(tiny) == models.count_parameters(loaded)


def test_a_student_larger_than_its_teacher_warns(tiny, tmp_path):
    bigger = tmp_path / "bigger"
    config = models.tiny_llama_config(TINY.model_copy(update={"hidden_size": 64}), models.load_tokenizer(tiny))
    torch.manual_seed(0)
    models.save_model(LlamaForCausalLM(config), models.load_tokenizer(tiny), bigger)
    with pytest.warns(UserWarning, match="larger than its teacher"):
        sft.warn_if_larger(str(bigger), str(tiny))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sft.warn_if_larger(str(tiny), str(bigger))  # smaller: silent


def test_missing_teacher_data_is_a_clear_error_before_training(tiny, tmp_path):
    params = validate({"runtime": {"device": "cpu"}, "distill": {"model": str(tiny.parent),
                                                                "data": str(tmp_path / "missing.jsonl"),
                                                                "students": {"model": {}}},
                       "evaluate": {"models": ["base"]}})
    with pytest.raises(DataError, match="missing.jsonl: file not found"):  # bad input: a flow does not retry it
        sft.run("distill_model", params.stage_section("distill_model"), params, tmp_path / "out")
    assert not (tmp_path / "out").exists()

