"""Analyses that run or read many pipelines: sweep, tune, search, sensitivity, compare."""
