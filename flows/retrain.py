"""Scheduled retraining with a promotion gate.

    python -m flows.retrain                 # what the `scheduled-retrain` deployment runs on its cron schedule

Picks up the drop folder (tasks/blocks/incoming.py: good files appended to the data prepare_data reads, bad ones
quarantined), re-runs what DVC finds stale (evaluation and the `register` stage included), then runs the promotion
gate (tasks/blocks/promotion.py) on the newly registered version: `champion` if it is not worse than the current
champion on the gate metrics (params `promotion`), else `challenger`, and the flow run ends in a "Not promoted" state
with the reason. A markdown summary (intake, ladder, decision, MLflow links) is posted as a Prefect artifact.
"""

from __future__ import annotations

import argparse
import json

from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from flows.pipeline import (
    claim_flow_run,
    run_recipe,
    select_stages,
    summary,
    validated_params,
    without_prefect_traceback,
    workspace_lock,
)
from tasks.blocks import incoming, promotion, tracking
from tasks.blocks.params import Params


@task(name="intake", cache_policy=NO_CACHE)
def intake() -> dict:
    """The drop folder: validate, append the good files, quarantine the bad ones (the run goes on)."""
    logger = get_run_logger()
    report = incoming.ingest()
    for name, count in report["accepted"].items():
        logger.info("accepted %s: %d rows", name, count)
    for name, reason in report["quarantined"].items():
        logger.warning("quarantined %s: %s", name, reason)
    return report


@task(name="promotion-gate", cache_policy=NO_CACHE)
def promote(params: Params) -> tuple[int, promotion.Decision]:
    if not promotion.REGISTRY_FILE.exists():
        raise FileNotFoundError(f"{promotion.REGISTRY_FILE} does not exist: the retrain must run the `register` stage")
    version = json.loads(promotion.REGISTRY_FILE.read_text())["version"]
    tracking.setup(params.tracking.experiment)
    decision = promotion.promote(MlflowClient(), params.registry.name, version, params.promotion)
    get_run_logger().info("version %s: %s (%s)", version, "promoted" if decision.promoted else "not promoted",
                          decision.reason)
    return version, decision


def intake_lines(report: dict) -> list[str]:
    lines = [f"- accepted `{name}`: {count} rows" for name, count in report["accepted"].items()]
    lines += [f"- quarantined `{name}`: {reason}" for name, reason in report["quarantined"].items()]
    return lines or [f"- no new files in `{incoming.INCOMING}`"]


def promotion_lines(params: Params, version: int, decision: promotion.Decision) -> list[str]:
    alias = promotion.CHAMPION if decision.promoted else promotion.CHALLENGER
    url = f"{tracking.ui_url()}/#/models/{params.registry.name}/versions/{version}"
    gate = ", ".join(f"{k} ({better} is better)" for k, better in params.promotion.gate.items())
    return [f"**{'Promoted' if decision.promoted else 'Not promoted'}**: [{params.registry.name} version {version}]"
            f"({url}) is `{alias}`: {decision.reason}.", "", f"Gate: {gate}; tolerance {params.promotion.tolerance}."]


@flow(name="scheduled-retrain")
def scheduled_retrain(stages: list[str] | None = None, overrides: list[str] | None = None) -> State:
    """Take in the drop folder, re-run what is stale, evaluate, and promote the new final model to `champion` only if
    it passes the gate (params `promotion`); otherwise it is `challenger` and the run ends "Not promoted".

    Args:
        stages: DVC stages to run (default: all; DVC skips what is up to date). Must include `register`.
        overrides: params.yaml overrides as dotted.key=value; the retrain then is a DVC experiment.
    """
    params = validated_params(overrides)  # before any work, as in r1-pipeline
    if "register" not in select_stages(stages):
        # Without it, metrics/registry.json would name an older version and the gate would judge that one.
        raise ValueError(f"scheduled-retrain promotes the version the `register` stage makes: add it to {stages}")
    claim_flow_run()
    with workspace_lock():
        report = intake()
        run = run_recipe(params, stages, overrides)
        version, decision = promote(params)
    text = "\n".join(["## Scheduled retrain", "", "### Promotion", "", *promotion_lines(params, version, decision),
                      "", "### Drop folder", "", *intake_lines(report), "", summary(run)])
    create_markdown_artifact(text, key="scheduled-retrain-summary", description="promotion decision, ladder, runs")
    message = f"{params.registry.name} version {version}: {decision.reason}"
    # A completed run either way (nothing failed), but one that did not promote says so in its state's name.
    return Completed(message=message) if decision.promoted else Completed(name="Not promoted", message=message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", help="run only these DVC stages (default: all)")
    parser.add_argument("--set", nargs="+", dest="overrides", metavar="KEY=VALUE", help="params.yaml overrides")
    args = parser.parse_args()
    without_prefect_traceback(lambda: scheduled_retrain(stages=args.stages, overrides=args.overrides),
                              "scheduled-retrain")


if __name__ == "__main__":
    main()
