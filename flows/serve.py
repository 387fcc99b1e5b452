"""Register and serve the project's deployments against a Prefect server (`make serve`).

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve

Run it from the workspace (the repository root): served flow runs execute as subprocesses of this process, in this
directory. Deployments:
- `r1-pipeline/r1-pipeline`: the recipe, from the UI with parameters (stages, params overrides);
- `scheduled-retrain/scheduled-retrain`: drop-folder intake, retrain, promotion gate; on the cron schedule of
  `orchestration.retrain_cron` (in `orchestration.retrain_timezone`).
Each deployment runs one flow run at a time (a deployment concurrency limit: a second run waits in
AwaitingConcurrencySlot, then runs); runs of different deployments also wait for each other on the workspace lock.
"""

from __future__ import annotations

import argparse

from prefect import serve
from prefect.schedules import Cron

from flows.pipeline import pipeline
from flows.retrain import scheduled_retrain
from tasks.params import load_params

TAGS = ["r1-pipeline"]


def deployments(schedule: bool = True) -> list:
    params = load_params()  # a bad params.yaml (a bad cron included) stops here
    cron = Cron(params.orchestration.retrain_cron, timezone=params.orchestration.retrain_timezone)
    return [
        pipeline.to_deployment(name="r1-pipeline", tags=TAGS, concurrency_limit=1,
                               description=pipeline.__doc__),
        scheduled_retrain.to_deployment(name="scheduled-retrain", tags=TAGS, concurrency_limit=1,
                                        schedules=[cron] if schedule else None,
                                        description=scheduled_retrain.__doc__),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-schedule", action="store_true", help="serve scheduled-retrain without its schedule")
    args = parser.parse_args()
    serve(*deployments(schedule=not args.no_schedule))


if __name__ == "__main__":
    main()
