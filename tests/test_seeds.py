import json
import random
import subprocess

import pytest

from tasks import seeds
from tasks.blocks.params import ParamsError, validate


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
    commands = [c[2:] for c in seeds.stage_commands(p)]
    assert commands[:5] == [["tasks.prepare_data"], ["tasks.base_model"], ["tasks.sft", "cold_start_sft"],
                            ["tasks.grpo", "reasoning_rl"], ["tasks.grpo", "r1_zero"]]
    assert ["tasks.evaluate", "base_r1_zero_prompt"] in commands


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


def test_a_seed_runs_its_stages_in_its_folder_and_resumes_after_the_last_finished(tmp_path, monkeypatch):
    import sys

    params = validate({})
    folder = tmp_path / "seed-1"
    fail = tmp_path / "fail"
    script = ("import os, pathlib, sys; pathlib.Path('log').open('a').write(sys.argv[1] + '\\n'); "
              f"sys.exit(1 if sys.argv[1] == 'b' and pathlib.Path({str(fail)!r}).exists() else 0)")
    (tmp_path / "stage.py").write_text(script)
    monkeypatch.setattr(seeds, "stage_commands",
                        lambda p: [[sys.executable, str(tmp_path / "stage.py"), name] for name in ("a", "b", "c")])
    fail.touch()
    with pytest.raises(subprocess.CalledProcessError):
        seeds.run_seed(params, 1, folder)
    fail.unlink()
    assert seeds.run_seed(params, 1, folder) == folder / "evals"
    assert (folder / "log").read_text().split() == ["a", "b", "b", "c"]  # a finished stage is not run again
    assert validate(__import__("yaml").safe_load((folder / "params.yaml").read_text())).toy_world.seed == 1
    # Other params (the world or a stage changed since): nothing finished under the old ones is kept.
    seeds.run_seed(validate({"reasoning_rl": {"learning_rate": 1e-5}}), 1, folder)
    assert (folder / "log").read_text().split() == ["a", "b", "b", "c", "a", "b", "c"]
    seeds.run_seed(validate({"reasoning_rl": {"learning_rate": 1e-5}}), 1, folder)
    assert (folder / "log").read_text().split()[7:] == []
