"""`python -m flows.guard FLOW_PID CMD...`: run CMD (a stage's `dvc repro`) in this process's group, and stop the whole
group when the flow process FLOW_PID dies, even by SIGKILL (a preempted or OOM-killed flow worker).

The flow starts each stage in a process group of its own, so that cancelling kills the stage and everything it
started; but a flow process that is SIGKILLed cannot do that, and DVC and the stage would run on as orphans, holding
DVC's lock. The kernel tells this guard (PR_SET_PDEATHSIG) when the flow process dies; the guard then SIGKILLs its
group: DVC, the stage and what the stage started in the group (accelerate and vLLM run in groups of their own and
are stopped by the same signal when the stage dies, tasks/blocks/launch.py). Linux only; elsewhere the guard only runs
CMD.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def _kill_group(signum, frame) -> None:
    os.killpg(0, signal.SIGKILL)  # this guard included


def main() -> int:
    flow_pid, cmd = int(sys.argv[1]), sys.argv[2:]
    signal.signal(signal.SIGTERM, _kill_group)
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the flow process dies
    if os.getppid() != flow_pid:  # it died before the line above
        _kill_group(signal.SIGTERM, None)
    returncode = subprocess.call(cmd)
    return 128 - returncode if returncode < 0 else returncode  # killed by a signal: the shell's 128 + N


if __name__ == "__main__":
    sys.exit(main())
