"""Analyses that run or read many pipelines: sweep, tune, sensitivity, compare."""
