"""The recipe's stages (`python -m tasks.<stage>`); the code they share is in `tasks.blocks`.

Garbage collection, set here because every stage process imports this package first: torch, transformers, TRL and
MLflow leave ~500k long-lived objects, which the cyclic collector's default thresholds (700, 10, 10) scan again and
again while they are being imported (8 full collections, ~1.1 s of a GRPO stage's ~5 s of imports, measured with
gc.callbacks), and once more, with everything a stage built, in the full collections of interpreter shutdown
(1-2.5 s per stage). A larger first threshold keeps the imports from triggering full collections; freezing the heap
at exit leaves it to be freed by reference counting, as it is anyway. Neither changes what a stage computes.
"""

import atexit
import gc

if gc.get_threshold()[0] < 10_000:
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
atexit.register(gc.freeze)  # registered first, so it runs last: after MLflow's and the reward worker's exit hooks
