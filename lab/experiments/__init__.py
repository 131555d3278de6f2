"""Experiment functions behind the notebooks: each module computes one paper's tables and figures from `lab`."""
