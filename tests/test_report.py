import json
import re

import pytest
from mlflow import MlflowClient

from tasks import report
from tasks.blocks.params import EvaluateParams, Params, TrackingParams

SECTIONS = ["ladder", "deltas", "scaling", "rl-curves", "rejection-sampling", "students", "r1-zero", "provenance"]
DELTAS = [{"from": "base", "to": "reasoning_rl", "metric": "pass@1", "delta": 0.333, "ci95": [0.25, 0.41], "n": 200,
           "excludes_zero": True},
          {"from": "reasoning_rl", "to": "resft", "metric": "pass@1", "delta": -0.067, "ci95": [-0.15, 0.02],
           "n": 200, "excludes_zero": False}]
TTS = {"model": "reasoning_rl", "N": [1, 2, 4], "n": 200, "verifier": [0.4, 0.5, 0.6],
       "verifier_ci95": [[0.3, 0.5], [0.4, 0.6], [0.5, 0.7]], "majority_vote": [0.4, 0.4, 0.45],
       "majority_vote_ci95": [[0.3, 0.5], [0.3, 0.5], [0.35, 0.55]], "reward_model": [0.4, 0.42, 0.43],
       "reward_model_ci95": [[0.3, 0.5], [0.32, 0.52], [0.33, 0.53]]}
EXPERIMENT = "report-test"
RS_REPORT = {"prompts": 10, "samples": 40, "samples_per_prompt": 4, "pass_rate": 0.3,
             "pass_rate_histogram": {"0/4": 5, "1/4": 2, "2/4": 1, "3/4": 1, "4/4": 1},
             "dropped_by_filter": {"correct": 28, "duplicate": 1, "format": 2, "language": 0, "per_prompt_cap": 3,
                                   "repetition": 0, "too_long": 0, "truncated": 1},
             "filter_order": ["correct", "format", "language", "truncated", "too_long", "repetition", "duplicate",
                              "per_prompt_cap"],
             "kept_reasoning": 5, "non_reasoning": 2, "final_size": 7, "non_reasoning_share": 2 / 7,
             "prompts_with_a_kept_sample": 4}


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.DOTALL)
    assert match, f"no section {anchor}"
    return match.group(1)


def log_run(client, experiment_id, stage, values, status="FINISHED"):
    run = client.create_run(experiment_id, tags={"stage": stage})
    for step, value in enumerate(values, start=1):
        client.log_metric(run.info.run_id, "reward", value, step=step)
        client.log_metric(run.info.run_id, "rewards/accuracy_reward/mean", value / 2, step=step)
        client.log_metric(run.info.run_id, "completions/mean_length", 30 + step, step=step)
        client.log_metric(run.info.run_id, "grad_norm", 1.0, step=step)  # not a curve key
    client.set_terminated(run.info.run_id, status)
    return run.info.run_id


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The report of a small finished run, built once (a new sqlite MLflow store alone takes seconds): metrics,
    curves, dvc.lock and params.yaml in the working directory, an MLflow store with a finished reasoning_rl run."""
    root = tmp_path_factory.mktemp("run")
    uri = f"sqlite:///{root}/mlflow.db"
    models = ["base", "reasoning_rl", "resft", "distill_small", "r1_zero"]  # r1_zero: trained, never evaluated
    for model, pass_at_1 in [("base", 0.123), ("reasoning_rl", 0.456), ("resft", 0.389), ("distill_small", 0.321)]:
        write(root / "metrics" / f"{model}.json", json.dumps({
            "model": model, "pass@1": pass_at_1, "maj@k": 0.5, "k": 4, "greedy_accuracy": 0.4, "format_rate": 1.0,
            "language_consistency": 0.9, "mean_completion_tokens": 42.0, "refusal_rate": 0.75}))
    base = json.loads((root / "metrics" / "base.json").read_text())
    write(root / "metrics" / "base.json", json.dumps({**base, "pass@1_ci95": [0.1, 0.146], "n": 200}))
    write(root / "metrics" / "ladder_deltas.json", json.dumps({"deltas": DELTAS}))
    write(root / "metrics" / "tts_reasoning_rl.json", json.dumps(TTS))
    write(root / "metrics" / "rejection_sampling.json", json.dumps(RS_REPORT))
    csv_header = "step,reward,reward_std,rewards/accuracy_reward/mean,completions/mean_length,kl\n"
    write(root / "plots" / "reasoning_rl.csv", csv_header + "1,0.9,0.1,0.45,20.0,\n")
    write(root / "plots" / "alignment_rl.csv", csv_header + "5,0.25,0.1,0.125,40.0,\n10,0.5,0.1,0.25,44.0,\n")
    write(root / "plots" / "r1_zero.csv", csv_header + "1,0.1,0.1,0.1,60.0,\n2,0.2,0.1,0.2,80.0,\n")
    write(root / "params.yaml", "seed: 42  # the params file, verbatim\n")
    write(root / "dvc.lock", "schema: '2.0'\nstages:\n  reasoning_rl:\n    cmd: python -m tasks.grpo reasoning_rl\n"
                             "    outs:\n    - path: models/reasoning_rl\n      md5: 0123abcd.dir\n")
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT)
    run_id = log_run(client, experiment_id, "reasoning_rl", [0.2, 0.4, 0.6])
    write(root / "models" / "reasoning_rl" / "provenance.json", json.dumps({"stage": "reasoning_rl",
                                                                            "mlflow_run_id": run_id}))
    log_run(client, experiment_id, "reasoning_rl", [0.9, 0.9, 0.9], status="FAILED")  # later, but failed
    log_run(client, experiment_id, "reasoning_rl", [0.7, 0.7, 0.7])  # later and finished: a discarded experiment's
    params = Params(tracking=TrackingParams(experiment=EXPERIMENT), evaluate=EvaluateParams(models=models))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        data = report.run("report", params.tracking, params)
    return {"data": data, "page": (root / "reports" / "report.html").read_text(), "run_id": run_id, "root": root}


def test_report_has_every_section_and_the_ladder_values(built):
    page = built["page"]
    for anchor in SECTIONS:
        assert f'<section id="{anchor}"><h2>' in page
    ladder = section(page, "ladder")
    for value in ("0.456", "0.389", "0.321"):
        assert f"<td>{value}</td>" in ladder
    assert '0.123 <span class="muted">± 0.023</span>' in ladder  # the value ± half its interval
    assert "<td>200</td>" in ladder  # n problems
    assert "not evaluated: no metrics/r1_zero.json" in ladder
    assert ladder.count("<img ") == 1
    assert "distill_small" in section(page, "students") and "resft" in section(page, "students")
    provenance = section(page, "provenance")
    assert "seed: 42  # the params file, verbatim" in provenance and "0123abcd.dir" in provenance
    assert json.loads((built["root"] / "reports" / "report.json").read_text())["ladder"][1]["pass@1"] == 0.456


def test_report_is_self_contained(built):
    page = built["page"]
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) >= 5 and all(s.startswith("data:image/png;base64,") for s in sources)


def test_curves_come_from_mlflow_and_fall_back_to_the_csv(built):
    data, run_id = built["data"], built["run_id"]
    reasoning, alignment = data["curves"]["reasoning_rl"], data["curves"]["alignment_rl"]
    # The history of the run that made models/reasoning_rl (its provenance.json), not a later failed or finished
    # run of the stage, not the CSV; only the curve keys.
    assert reasoning["source"] == "mlflow" and reasoning["run_id"] == run_id
    assert reasoning["series"]["reward"] == [[1, 0.2], [2, 0.4], [3, 0.6]]
    assert set(reasoning["series"]) == {"reward", "rewards/accuracy_reward/mean", "completions/mean_length"}
    assert alignment["source"] == "csv"
    assert alignment["series"]["completions/mean_length"] == [[5, 40.0], [10, 44.0]]
    assert "kl" not in alignment["series"]
    curves = section(built["page"], "rl-curves")
    assert f"MLflow run {run_id}" in curves and "plots/alignment_rl.csv (no finished MLflow run" in curves
    assert "not run: no finished MLflow run tagged stage=student_rl" in curves
    assert data["provenance"]["stages"][0] == {"stage": "reasoning_rl", "outs": {"models/reasoning_rl": "0123abcd.dir"},
                                               "mlflow_run_id": run_id}


def test_r1_zero_beside_reasoning_rl(built):
    r1_zero = section(built["page"], "r1-zero")
    assert "R1-Zero not run" not in r1_zero and "<td>0.456</td>" in r1_zero  # reasoning_rl's row
    assert "not evaluated: no metrics/r1_zero.json" in r1_zero and r1_zero.count("<img ") == 1
    assert "plots/r1_zero.csv" in r1_zero


def test_an_empty_workspace_reports_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    # The R1 path only: no student, no R1-Zero (the toy world's defaults evaluate both).
    params = Params(evaluate=EvaluateParams(models=["base", "cold_start_sft", "reasoning_rl", "resft", "alignment_rl"],
                                            prompted={}))
    report.run("report", params.tracking, params)
    page = (tmp_path / "reports" / "report.html").read_text()
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in page
    assert section(page, "ladder").count("not evaluated") == len(params.evaluate.models)
    assert "not run: no metrics/rejection_sampling.json" in section(page, "rejection-sampling")
    assert "No student model in evaluate.models" in section(page, "students")
    assert "R1-Zero not run" in section(page, "r1-zero")
    assert not (tmp_path / "mlflow.db").exists()  # reading the report never creates a tracking store


def test_funnel_follows_the_filter_order():
    steps = report.funnel(RS_REPORT)
    assert [s["step"] for s in steps[:4]] == ["samples", "after correct", "after format", "after language"]
    assert [s["left"] for s in steps] == [40, 12, 10, 10, 9, 9, 9, 8, 5, 5, 2, 7]




def test_deltas_and_test_time_scaling(built):
    deltas = section(built["page"], "deltas")
    assert "<b>+0.333</b>" in deltas and "[+0.250, +0.410]" in deltas  # excludes 0: bold
    assert "<td>-0.067</td>" in deltas  # inside the noise: plain
    scaling = section(built["page"], "scaling")
    assert scaling.count("<img ") == 1 and "no metrics/tts_base.json" in scaling
