"""Imported once by the run fork server so that each run process starts with the heavy libraries loaded.

Only imports: no computation, no CUDA initialisation (forked children must start clean). First of
all the fork server ties its life to its parent's, so that a sweep killed even while the imports
are still going leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os

from peftbench.core.isolate import SERVER_PID_ENV, SWEEP_PID_ENV, die_with_parent
from peftbench.runtime.device import quiet_kernel_notices
from peftbench.runtime.signals import shelter

die_with_parent(SWEEP_PID_ENV)
shelter()  # a group SIGTERM or SIGHUP must leave the run processes time to record their cancel
os.environ[SERVER_PID_ENV] = str(os.getpid())  # inherited by every run process forked from here

quiet_kernel_notices()  # before peft imports bitsandbytes, whose kernel notices would land in every sweep's output
with contextlib.suppress(ImportError):
    import accelerate  # noqa: F401
    import peft  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import torch  # noqa: F401
    from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

from peftbench.core import runner  # noqa: F401, E402
