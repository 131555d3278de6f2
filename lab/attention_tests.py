"""Moved to `lab.analysis.attention_tests`; this alias stays only for `lab.experiments.jain_wallace` until it imports
the new path."""
import sys

from lab.analysis import attention_tests as _attention_tests

sys.modules[__name__] = _attention_tests
