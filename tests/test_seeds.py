import json
import random
import shutil
import subprocess
import sys

import pytest
import yaml
from dvc.repo import Repo

from tasks import seeds
from tasks.blocks.params import ParamsError, apply_overrides, validate


def write_evals(folder, name, rate, n=60, seed=0):
    """evals/<name>.json with n problems, each right in 4 samples with probability `rate`."""
    rng = random.Random(seed)
    problems = [{"id": f"p{i}", "correct": [float(rng.random() < rate) for _ in range(4)], "answer": ["1"] * 4,
                 "greedy_correct": 0.0, "format": [1.0] * 4} for i in range(n)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps({"metrics": {"model": name}, "problems": problems,
                                                     "general": []}))


def test_a_seed_sets_the_world_and_model_seeds_and_keeps_only_the_evaluations_needed():
    params = validate({})
    p = seeds.seed_params(params, 2)
    assert (p.toy_world.seed, p.seed) == (2, params.seed + 2)
    assert p.evaluate.names == ["base", "cold_start_sft", "reasoning_rl", "r1_zero", "base_r1_zero_prompt"]
    assert p.evaluate.general_data is None and p.evaluate.reward_model == ""
    assert p.reasoning_rl == params.reasoning_rl  # everything else as in params.yaml
    commands = {name: c[2:] for name, c in seeds.stage_commands(p).items()}
    assert list(commands)[:5] == ["prepare_data", "base_model", "cold_start_sft", "reasoning_rl", "r1_zero"]
    assert commands["cold_start_sft"] == ["tasks.sft", "cold_start_sft"]
    assert commands["evaluate_prompted@base_r1_zero_prompt"] == ["tasks.evaluate", "base_r1_zero_prompt"]
    assert list(commands)[5:] == [*(f"evaluate@{m}" for m in params.seeds.models),
                                  "evaluate_prompted@base_r1_zero_prompt"]


def test_each_command_is_its_dvc_yaml_stages_and_a_stage_keys_on_what_dvc_yaml_says_it_reads():
    p = seeds.seed_params(validate({}), 1)
    commands = seeds.stage_commands(p)
    specs = seeds.dvc_stages(list(commands))
    with Repo(str(seeds.ROOT)) as repo:
        cmds = {stage.addressing: stage.cmd for stage in repo.index.stages}
    for name, command in commands.items():
        assert cmds[name].split() == ["python", *command[1:]], name
    assert specs["evaluate_prompted@base_r1_zero_prompt"].params[-1] == "r1_zero.prompt_template"  # a dotted key
    assert specs["cold_start_sft"].code[0] == "tasks/sft.py"
    assert "models/base" in specs["r1_zero"].deps and "models/r1_zero" in specs["r1_zero"].outs
    raw = p.model_dump(mode="json")
    assert seeds.param_value(raw, "r1_zero.prompt_template") == p.r1_zero.prompt_template
    assert seeds.param_value(raw, "toy_world") == raw["toy_world"] and seeds.param_value(raw, "no.such") is None


def test_collect_gives_each_seeds_paired_deltas_with_intervals(tmp_path):
    params = validate({})
    evals = {}
    for seed, gain in ((0, 0.3), (1, 0.2), (2, 0.0)):
        folder = tmp_path / f"s{seed}"
        for name, rate in (("base", 0.2), ("cold_start_sft", 0.3), ("reasoning_rl", 0.3 + gain), ("r1_zero", 0.5),
                           ("base_r1_zero_prompt", 0.2)):
            write_evals(folder, name, rate, seed=seed)
        evals[seed] = folder
    result = seeds.collect(params, evals)
    assert result["seeds"] == [0, 1, 2]
    rl = result["deltas"]["reasoning_rl-cold_start_sft"]
    assert rl[0] > rl[1] > rl[2] - 0.1 and len(result["ci95"]["reasoning_rl-cold_start_sft"]) == 3
    for (lo, hi), d in zip(result["ci95"]["reasoning_rl-cold_start_sft"], rl):
        assert lo <= d <= hi
    assert set(result["deltas"]) == {"cold_start_sft-base", "reasoning_rl-cold_start_sft",
                                     "r1_zero-base_r1_zero_prompt"}
    assert result["sd"]["reasoning_rl-cold_start_sft"] == pytest.approx(
        __import__("statistics").stdev(rl))


def test_seeds_must_be_evaluated_models(tmp_path, monkeypatch, capsys):
    # A partial params file may evaluate fewer models (tests, recipes): only `make seeds` needs them all.
    (tmp_path / "params.yaml").write_text("seeds: {models: [resft, base]}\nevaluate: {models: [base]}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["tasks.seeds"])
    with pytest.raises(SystemExit):
        seeds.main()
    assert "['resft']" in capsys.readouterr().err
    with pytest.raises(ParamsError, match="distinct"):
        validate({"seeds": {"seeds": [1, 1]}})


def with_params(**overrides):
    """The defaults with dotted keys set (a section given as a dict would replace the whole section)."""
    return validate(apply_overrides(validate({}).model_dump(mode="json"), overrides))


@pytest.fixture
def fake_stages(tmp_path, monkeypatch):
    """Fake stage commands (each logs its dvc.yaml stage name to the folder's `log`, and fails when `fail` names it);
    returns a function running seed 1 in tmp_path/seed-1 and giving the stages that ran in that call."""
    folder = tmp_path / "seed-1"
    fail = tmp_path / "fail"
    script = ("import pathlib, sys; pathlib.Path('log').open('a').write(sys.argv[1] + '\\n'); "
              f"f = pathlib.Path({str(fail)!r}); sys.exit(1 if f.exists() and f.read_text() == sys.argv[1] else 0)")
    (tmp_path / "stage.py").write_text(script)
    real = seeds.stage_commands
    monkeypatch.setattr(seeds, "stage_commands", lambda p: {
        name: [sys.executable, str(tmp_path / "stage.py"), name] for name in real(p)})

    def run(params=None, failing=None):
        log = folder / "log"
        before = len(log.read_text().split()) if log.exists() else 0
        if failing:
            fail.write_text(failing)
        try:
            assert seeds.run_seed(params or validate({}), 1, folder) == folder / "evals"
        finally:
            fail.unlink(missing_ok=True)
            run.ran = log.read_text().split()[before:] if log.exists() else []
        return run.ran

    run.folder = folder
    return run


ALL = ["prepare_data", "base_model", "cold_start_sft", "reasoning_rl", "r1_zero", "evaluate@base",
       "evaluate@cold_start_sft", "evaluate@reasoning_rl", "evaluate@r1_zero", "evaluate_prompted@base_r1_zero_prompt"]


def test_a_seed_runs_its_stages_in_its_folder_and_resumes_after_the_last_finished(fake_stages):
    with pytest.raises(subprocess.CalledProcessError):
        fake_stages(failing="cold_start_sft")
    assert fake_stages.ran == ["prepare_data", "base_model", "cold_start_sft"]
    assert fake_stages() == ALL[2:]  # a finished stage is not run again, the one that failed is
    folder = fake_stages.folder
    assert validate(yaml.safe_load((folder / "params.yaml").read_text())).toy_world.seed == 1
    assert sorted(path.name for path in (folder / ".done").iterdir()) == sorted(ALL)
    assert fake_stages() == []  # nothing changed: nothing runs


def test_a_changed_param_reruns_the_stages_that_list_it_and_those_downstream_only(fake_stages):
    fake_stages()
    # r1_zero.learning_rate: r1_zero and its evaluation; the base under R1-Zero's prompt lists only
    # r1_zero.prompt_template.
    assert fake_stages(with_params(**{"r1_zero.learning_rate": 1e-5})) == ["r1_zero", "evaluate@r1_zero"]
    assert fake_stages(with_params(**{"r1_zero.learning_rate": 1e-5})) == []
    assert fake_stages() == ["r1_zero", "evaluate@r1_zero"]  # back to the old value: its stages run again
    assert fake_stages(with_params(**{"r1_zero.prompt_template": "Q: {prompt}\nA:"})) == [
        "r1_zero", "evaluate@r1_zero", "evaluate_prompted@base_r1_zero_prompt"]


def test_a_changed_base_model_or_world_reruns_everything_downstream_of_it(fake_stages):
    fake_stages()
    assert fake_stages(with_params(**{"base_model.learning_rate": 1e-3})) == ALL[1:]
    assert fake_stages(with_params(**{"base_model.learning_rate": 1e-3, "toy_world.max_operand": 10})) == ALL
    # A failure midway keeps what finished under the new key and runs the rest next time.
    with pytest.raises(subprocess.CalledProcessError):
        fake_stages(with_params(**{"base_model.epochs": 2.0}), failing="reasoning_rl")
    assert fake_stages(with_params(**{"base_model.epochs": 2.0})) == ALL[3:]


def test_changed_code_reruns_the_stages_that_run_it_and_those_downstream_only(fake_stages, tmp_path, monkeypatch):
    copy = tmp_path / "sft.py"
    shutil.copy(seeds.ROOT / "tasks" / "sft.py", copy)
    real = seeds.sha256
    monkeypatch.setattr(seeds, "sha256", lambda path: real(copy if path == seeds.ROOT / "tasks/sft.py" else path))
    fake_stages()
    copy.write_text(copy.read_text() + "\n# changed\n")
    assert fake_stages() == ["cold_start_sft", "reasoning_rl", "evaluate@cold_start_sft", "evaluate@reasoning_rl"]
    assert fake_stages() == []
