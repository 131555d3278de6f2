"""Moved to `lab.analysis.heads`; this alias stays only for `lab.experiments.mask_lrp` until it imports the new path."""
import sys

from lab.analysis import heads as _heads

sys.modules[__name__] = _heads
