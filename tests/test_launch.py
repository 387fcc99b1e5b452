"""Scale-out: training stages under `accelerate launch` (2 CPU processes over gloo), and the vLLM paths' one clear
message where vLLM cannot run."""

import json
import os
import socket
import sys
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml

from tasks import evaluate, grpo, rejection_sampling, sft
from tasks.blocks import launch
from tasks.blocks.generation import Sampling, generate
from tasks.blocks.params import (
    EvaluateParams,
    GenerationParams,
    GRPOParams,
    Params,
    RejectionSamplingParams,
    RuntimeParams,
)

ROOT = Path(__file__).resolve().parents[1]


def user(text):
    return [{"role": "user", "content": text}]


def workspace(tmp_path: Path, tiny: Path, stage: str, section: dict, runtime: dict, experiment: str) -> Path:
    """A stage's world in tmp_path: tiny model, a few rows of data, params.yaml asking for `runtime`."""
    rows = [{"id": f"p{i}", "prompt": user(f"Ana has {i} pens. She buys 1 more. How many?"), "answer": str(i + 1),
             "completion": [{"role": "assistant", "content": f"<think>\n{i} + 1 = {i + 1}.\n</think>\n"
                                                            f"\\boxed{{{i + 1}}}"}]} for i in range(8)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    params = {"runtime": {"device": "cpu", **runtime}, "tracking": {"experiment": experiment},
              stage: {"model": str(tiny), "data": "data.jsonl", **section}}
    if "max_steps" in section:  # a GRPO stage: the distill-vs-RL comparison's one RL budget, the dev curve's prompts
        params["student_rl"] = {"max_steps": section["max_steps"]}
        params[stage]["dev_data"] = "data.jsonl"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


@pytest.fixture(scope="module")
def tracking_db(tmp_path_factory):
    """One MLflow store for the launch tests (creating one costs seconds); each test has its own experiment."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"


@pytest.fixture
def stage_process_here(monkeypatch):
    """This test process plays the stage process: MLflow's process-wide state (tracking URI, active experiment, which
    `set_experiment` also puts in the environment) is put back afterwards, for the tests that follow."""
    from mlflow.tracking import fluent

    uri, experiment_env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_EXPERIMENT_ID")
    monkeypatch.setattr(fluent, "_active_experiment_id", fluent._active_experiment_id)
    yield
    mlflow.set_tracking_uri(uri)
    if experiment_env is None:
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    else:
        os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_env


def stage_runs(uri: str, experiment: str) -> list:
    mlflow.set_tracking_uri(uri)
    try:
        return mlflow.search_runs(experiment_names=[experiment], output_format="list")
    finally:
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])


TWO_CPU_PROCESSES = [
    (sft, "cold_start_sft", {"epochs": 1, "batch_size": 2, "max_length": 64}, "train_loss"),
    (grpo, "reasoning_rl", {"max_steps": 2, "per_device_train_batch_size": 4, "num_generations": 4,
                            "max_completion_length": 8, "logging_steps": 1}, "reward"),
]


@pytest.mark.parametrize("module, stage, section, trl_metric", TWO_CPU_PROCESSES, ids=["sft", "grpo"])
def test_a_training_stage_runs_on_two_cpu_processes_into_one_mlflow_run(tiny, tmp_path, tracking_db, stage_process_here,
                                                                        monkeypatch, capfd, module, stage, section,
                                                                        trl_metric):
    ws = workspace(tmp_path, tiny, stage, section, {"num_processes": 2}, experiment=stage)
    # This test process is the stage's launching process (`python -m tasks.<module> <stage>`, as dvc.yaml runs it);
    # the two ranks are real processes under `accelerate launch`.
    monkeypatch.chdir(ws)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_db)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setattr(sys, "argv", [module.__name__, stage])
    try:
        module.main()
    finally:
        log = "".join(capfd.readouterr())
    assert "accelerate.commands.launch --num_processes 2" in log and f"-m {module.__name__} {stage}" in log
    assert f"rank 0: {stage} finished" in log and f"rank 1: {stage} finished" in log
    assert log.count(f"saved models/{stage}") == 1  # by the main process only
    assert (ws / "models" / stage / "model.safetensors").exists()
    assert (ws / "models" / stage / "provenance.json").exists()
    (run,) = stage_runs(tracking_db, stage)  # the launching process's, joined by the main rank: not one per rank
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == stage
    assert run.data.params["params.model"] == str(tiny)  # the stage's params, logged once by the launching process
    assert run.data.metrics["world_size"] == 2  # the trainer's world: both ranks trained together, over gloo
    assert trl_metric in run.data.metrics  # TRL's per-step metrics landed in the same run


def test_a_deepspeed_config_on_cpu_fails_with_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    zero2 = str(ROOT / "configs/accelerate/zero2.yaml")
    runtime = RuntimeParams(device="cpu", num_processes=2, accelerate_config=zero2)
    with pytest.raises(launch.LaunchError, match="uses DeepSpeed, which is not installed here.*pip install deepspeed"):
        launch.check(runtime)
    fsdp = RuntimeParams(device="cpu", num_processes=2, accelerate_config=str(ROOT / "configs/accelerate/fsdp.yaml"))
    with pytest.raises(launch.LaunchError, match=r"\(FSDP\) needs CUDA GPUs; on CPU use configs/accelerate/ddp.yaml"):
        launch.check(fsdp)
    with pytest.raises(launch.LaunchError, match="missing.yaml not found"):
        launch.check(RuntimeParams(device="cpu", num_processes=2, accelerate_config="missing.yaml"))
    monkeypatch.setenv("LOCAL_RANK", "0")  # started by hand under `accelerate launch`: it would launch again
    with pytest.raises(launch.LaunchError, match="already running under a distributed launcher"):
        launch.check(RuntimeParams(device="cpu", num_processes=2))


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
    from tasks.blocks.stage import BAD_INPUT_ENV, run_stage

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv(BAD_INPUT_ENV, str(tmp_path / "bad_input.txt"))  # what a flow reads: failed, not to retry
    # GRPO with use_vllm, either mode: the stage stops before opening its MLflow run, starting a server or training.
    for mode in ("colocate", "server"):
        section = GRPOParams(model=str(tiny), use_vllm=True, vllm_mode=mode)
        with pytest.raises(RuntimeError) as error:
            run_stage("reasoning_rl", "reasoning_rl", section, Params(),
                      lambda *args: pytest.fail("trained without vLLM"), tmp_path / "out", trains=True)
        assert str(error.value).startswith("reasoning_rl.use_vllm asks for vLLM, but vLLM is not importable here. "
                                           "vLLM has environments of its own")
        assert str(error.value).endswith("or set reasoning_rl.use_vllm: false.")
        assert (tmp_path / "bad_input.txt").read_text() == f"RuntimeError: {error.value}\n"
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []
    # The generation backend: the interface itself, and the stages that use it fail before reading any data
    # (their data paths here do not exist) or loading a model.
    message = r"generation.backend asks for vLLM, but vLLM is not importable here.*or set generation.backend: hf"
    with pytest.raises(RuntimeError, match=message):
        generate(tiny, [user("hi")], Sampling(), GenerationParams(backend="vllm"), RuntimeParams(device="cpu"))
    vllm = Params(generation=GenerationParams(backend="vllm"), runtime=RuntimeParams(device="cpu"),
                  evaluate=EvaluateParams(data="missing.jsonl", general_data="missing.jsonl"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "base").symlink_to(tiny)  # evaluate.run reads models/<name>
    with pytest.raises(RuntimeError, match=message):
        evaluate.evaluate_model("base", vllm)
    with pytest.raises(RuntimeError, match=message):
        rejection_sampling.run("rejection_sampling", RejectionSamplingParams(model=str(tiny), data="missing.jsonl"),
                               vllm, tmp_path / "out")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_stage_server_is_healthy_in_its_block_and_always_stopped(tmp_path):
    # The lifecycle of the GRPO stage's `trl vllm-serve` (launch.serve), with Python's http.server in its place:
    # /health answers once the file exists, as vLLM's does once the model is loaded.
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "health").write_text("ok")
    port = free_port()
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path / "www")]
    with pytest.raises(KeyError):  # the stage fails while the server runs: the server still goes
        with launch.serve("test server", cmd, f"http://127.0.0.1:{port}", {}, 30, tmp_path / "server.log") as url:
            with urllib.request.urlopen(f"{url}/health") as response:
                assert response.status == 200
            raise KeyError("training failed")
    with pytest.raises(ConnectionRefusedError):  # stopped: nothing listens on its port any more
        socket.create_connection(("127.0.0.1", port), timeout=5)

    crash = [sys.executable, "-c", "print('CUDA error: no GPU here'); raise SystemExit(3)"]
    with pytest.raises(RuntimeError, match=r"(?s)the test server exited with code 3 before it was healthy.*"
                                           r"CUDA error: no GPU here"):
        with launch.serve("test server", crash, f"http://127.0.0.1:{free_port()}", {}, 30, tmp_path / "crash.log"):
            pytest.fail("entered the block without a healthy server")

    (tmp_path / "www" / "health").unlink()  # up, but never healthy
    with pytest.raises(RuntimeError, match=r"the test server at http://127.0.0.1:\d+ was not healthy after 2 s"):
        with launch.serve("test server", cmd, f"http://127.0.0.1:{port}", {}, 2, tmp_path / "slow.log"):
            pytest.fail("entered the block without a healthy server")
