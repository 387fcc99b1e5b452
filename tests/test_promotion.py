import mlflow
import pytest
from mlflow import MlflowClient

from tasks.blocks import promotion
from tasks.blocks.params import PromotionParams

GATE = PromotionParams(gate={"pass@1": "higher", "needless_refusal_rate": "lower"}, tolerance=0.0)


def test_first_model_is_promoted():
    decision = promotion.gate_decision({"pass@1": 0.1, "needless_refusal_rate": 0.5}, None, GATE)
    assert decision.promoted and "no champion yet" in decision.reason


@pytest.mark.parametrize("candidate", [
    {"pass@1": 0.30, "needless_refusal_rate": 0.10},  # better on both
    {"pass@1": 0.20, "needless_refusal_rate": 0.20},  # equal: "not lower" passes
])
def test_a_model_not_worse_on_any_gate_metric_is_promoted(candidate):
    champion = {"pass@1": 0.20, "needless_refusal_rate": 0.20}
    assert promotion.gate_decision(candidate, champion, GATE).promoted


def test_a_model_worse_on_one_gate_metric_is_not_promoted_and_the_reason_names_it():
    champion = {"pass@1": 0.20, "needless_refusal_rate": 0.20}
    lower = promotion.gate_decision({"pass@1": 0.15, "needless_refusal_rate": 0.0}, champion, GATE)
    assert not lower.promoted and "pass@1 0.15 vs champion 0.2 (higher is better)" in lower.reason
    more_refusals = promotion.gate_decision({"pass@1": 0.5, "needless_refusal_rate": 0.3}, champion, GATE)
    assert not more_refusals.promoted and "needless_refusal_rate" in more_refusals.reason
    assert "pass@1" not in more_refusals.reason


def test_tolerance_lets_a_small_drop_through():
    champion = {"pass@1": 0.20, "needless_refusal_rate": 0.20}
    candidate = {"pass@1": 0.19, "needless_refusal_rate": 0.20}
    assert not promotion.gate_decision(candidate, champion, GATE).promoted
    assert promotion.gate_decision(candidate, champion, GATE.model_copy(update={"tolerance": 0.02})).promoted


def test_a_gate_metric_the_candidate_lacks_is_a_clear_error():
    with pytest.raises(KeyError, match=r"gate metric\(s\) \['needless_refusal_rate'\]"):
        promotion.gate_decision({"pass@1": 0.1}, None, GATE)


def test_promote_sets_champion_then_challenger_on_the_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("gate")  # not the active experiment of an earlier test's store
    client = MlflowClient()
    client.create_registered_model("r1-gate")
    gate = PromotionParams(gate={"pass@1": "higher"})

    def new_version(pass_at_1: float) -> int:
        with mlflow.start_run() as run:
            pass
        return int(client.create_model_version("r1-gate", source=f"{run.info.artifact_uri}/model",
                                               run_id=run.info.run_id,
                                               tags={"metric.pass_at_1": str(pass_at_1)}).version)

    first = new_version(0.2)
    assert promotion.promote(client, "r1-gate", first, gate).promoted
    worse = new_version(0.1)
    decision = promotion.promote(client, "r1-gate", worse, gate)
    assert not decision.promoted
    assert int(client.get_model_version_by_alias("r1-gate", "champion").version) == first
    assert int(client.get_model_version_by_alias("r1-gate", "challenger").version) == worse
    assert client.get_model_version("r1-gate", str(worse)).tags["promotion"].startswith("not promoted: worse")
    better = new_version(0.3)
    assert promotion.promote(client, "r1-gate", better, gate).promoted
    assert int(client.get_model_version_by_alias("r1-gate", "champion").version) == better
    # Re-running the gate on the champion (DVC registered nothing new) changes nothing.
    again = promotion.promote(client, "r1-gate", better, gate)
    assert again.promoted and "already the champion" in again.reason
