"""Scale-out: training stages under `accelerate launch` (2 CPU processes over gloo), and the vLLM paths' one clear
message where vLLM cannot run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from tasks import launch
from tasks.generation import Sampling, generate
from tasks.params import GenerationParams, GRPOParams, RuntimeParams

ROOT = Path(__file__).resolve().parents[1]


def user(text):
    return [{"role": "user", "content": text}]


def workspace(tmp_path: Path, tiny: Path, stage: str, section: dict, runtime: dict) -> Path:
    """A stage's world in tmp_path: tiny model, a few rows of data, params.yaml asking for `runtime`."""
    rows = [{"id": f"p{i}", "prompt": user(f"Ana has {i} pens. She buys 1 more. How many?"), "answer": str(i + 1),
             "completion": [{"role": "assistant", "content": f"<think>\n{i} + 1 = {i + 1}.\n</think>\n"
                                                            f"\\boxed{{{i + 1}}}"}]} for i in range(8)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = {"runtime": {"device": "cpu", **runtime}, "tracking": {"experiment": "launch-test"},
              stage: {"model": str(tiny), "data": "data.jsonl", **section}}
    if "max_steps" in section:  # the distill-vs-RL comparison's one RL budget
        params["student_rl"] = {"max_steps": section["max_steps"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def run_stage(ws: Path, module: str, stage: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{ws}/mlflow.db",
           "OMP_NUM_THREADS": "1", "R1_PARAMS_FILE": "params.yaml"}
    env.pop(launch.RUN_ID_ENV, None)
    return subprocess.run([sys.executable, "-m", module, stage], cwd=ws, env=env, capture_output=True, text=True,
                          timeout=300)


def stage_runs(ws: Path) -> list:
    mlflow.set_tracking_uri(f"sqlite:///{ws}/mlflow.db")
    try:
        return mlflow.search_runs(experiment_names=["launch-test"], output_format="list")
    finally:
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])


TWO_CPU_PROCESSES = [
    ("tasks.sft", "cold_start_sft", {"epochs": 1, "batch_size": 2, "max_length": 64}, "train_loss"),
    ("tasks.grpo", "reasoning_rl", {"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4,
                                    "max_completion_length": 8, "logging_steps": 1}, "reward"),
]


@pytest.mark.parametrize("module, stage, section, trl_metric", TWO_CPU_PROCESSES, ids=["sft", "grpo"])
def test_a_training_stage_runs_on_two_cpu_processes_into_one_mlflow_run(tiny, tmp_path, module, stage, section,
                                                                        trl_metric):
    ws = workspace(tmp_path, tiny, stage, section, {"num_processes": 2})
    result = run_stage(ws, module, stage)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "accelerate.commands.launch --num_processes 2" in log
    assert f"rank 0: {stage} finished" in log and f"rank 1: {stage} finished" in log
    assert log.count(f"saved models/{stage}") == 1  # by the main process only
    assert (ws / "models" / stage / "model.safetensors").exists()
    assert (ws / "models" / stage / "provenance.json").exists()
    (run,) = stage_runs(ws)  # the launching process's run, joined by the main rank: not one run per rank
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == stage
    assert run.data.params["params.model"] == str(tiny)  # the stage's params, logged once by the launching process
    assert run.data.metrics["world_size"] == 2  # the trainer's world: both ranks trained together, over gloo
    assert trl_metric in run.data.metrics  # TRL's per-step metrics landed in the same run


def test_a_deepspeed_config_on_cpu_fails_with_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runtime = RuntimeParams(device="cpu", num_processes=2, accelerate_config=str(ROOT / "configs/accelerate/zero2.yaml"))
    with pytest.raises(launch.LaunchError, match="uses DeepSpeed, which is not installed here.*pip install deepspeed"):
        launch.check(runtime)
    fsdp = RuntimeParams(device="cpu", num_processes=2, accelerate_config=str(ROOT / "configs/accelerate/fsdp.yaml"))
    with pytest.raises(launch.LaunchError, match=r"\(FSDP\) needs CUDA GPUs; on CPU use configs/accelerate/ddp.yaml"):
        launch.check(fsdp)
    with pytest.raises(launch.LaunchError, match="missing.yaml not found"):
        launch.check(RuntimeParams(device="cpu", num_processes=2, accelerate_config="missing.yaml"))


def test_the_ready_accelerate_configs_are_valid():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {name: load_config_from_file(str(ROOT / f"configs/accelerate/{name}.yaml")).distributed_type
             for name in ("ddp", "zero2", "zero3", "fsdp")}
    assert {name: str(kind).split(".")[-1] for name, kind in kinds.items()} == {
        "ddp": "MULTI_GPU", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED", "fsdp": "FSDP"}


def test_the_default_runtime_trains_in_process():
    assert not launch.wanted(RuntimeParams())
    assert launch.wanted(RuntimeParams(num_processes=2))
    assert launch.wanted(RuntimeParams(), GRPOParams(use_vllm=True, vllm_mode="server"))
    assert not launch.wanted(RuntimeParams(), GRPOParams(use_vllm=True, vllm_mode="colocate"))


def test_every_vllm_path_fails_at_once_with_one_clear_message(tiny, tmp_path, monkeypatch):
    from tasks.params import Params
    from tasks.tracking import run_training

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    # GRPO with use_vllm, either mode: the stage stops before opening its MLflow run, starting a server or training.
    for mode in ("colocate", "server"):
        section = GRPOParams(model=str(tiny), use_vllm=True, vllm_mode=mode)
        with pytest.raises(RuntimeError) as error:
            run_training("reasoning_rl", section, Params(), train=lambda: pytest.fail("trained without vLLM"))
        assert str(error.value).startswith("reasoning_rl.use_vllm asks for vLLM, but vLLM is not importable here. "
                                           "vLLM needs CUDA")
        assert str(error.value).endswith("or set reasoning_rl.use_vllm: false.")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []
    # The generation backend (evaluation, rejection sampling, distillation data).
    with pytest.raises(RuntimeError, match=r"generation.backend asks for vLLM, but vLLM is not importable here.*"
                                           r"or set generation.backend: hf"):
        generate(tiny, [user("hi")], Sampling(), GenerationParams(backend="vllm"), RuntimeParams(device="cpu"))
