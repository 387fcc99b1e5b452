"""`python -m benchmarks.stage_probe <module> <args...>`: run `python -m <module> <args...>` unchanged, writing
timestamps (epoch seconds) of its phases as JSON lines to $R1_PROBE_FILE, for benchmarks/startup.py.

Markers: `stage_run` entered (imports and params done), its run open (MLflow set up: the stage's work starts), the
first and the last unit of work (a Trainer's training step, a Generator call), the stage's body done, `stage_run`
left (MLflow run ended). Nothing in the stage changes: the probe wraps functions, it does not replace them.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import json
import os
import runpy
import sys
import time
from contextlib import contextmanager

_out = open(os.environ["R1_PROBE_FILE"], "a", encoding="utf-8")  # noqa: SIM115 (open for the whole process)


def mark(name: str) -> None:
    _out.write(json.dumps({"mark": name, "t": time.time()}) + "\n")
    _out.flush()


def timed_unit(func):
    """Marks each call of `func` as a unit of work: the first start and the end of every call (the last one wins)."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        mark("unit_start")
        try:
            return func(*args, **kwargs)
        finally:
            mark("unit_end")
    return wrapper


# Module -> how to wrap its unit of work, applied when the stage imports the module (lazily or not).
UNITS = {
    "transformers.trainer": lambda m: setattr(m.Trainer, "training_step", timed_unit(m.Trainer.training_step)),
    "tasks.blocks.generation": lambda m: setattr(m.Generator, "__call__", timed_unit(m.Generator.__call__)),
}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in UNITS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        loader_exec = spec.loader.exec_module

        def exec_module(module):
            loader_exec(module)
            UNITS[name](module)
        spec.loader.exec_module = exec_module
        return spec


def probe_stage_run(original):
    @contextmanager
    def stage_run(*args, **kwargs):
        mark("setup_start")
        with original(*args, **kwargs) as run:
            mark("work_start")
            yield run
            mark("work_end")
        mark("run_closed")
    return stage_run


def main() -> None:
    mark("probe_start")
    sys.meta_path.insert(0, _PatchOnImport())
    import tasks.blocks.stage

    tasks.blocks.stage.stage_run = probe_stage_run(tasks.blocks.stage.stage_run)
    module, args = sys.argv[1], sys.argv[2:]
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
