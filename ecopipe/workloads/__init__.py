"""Workloads: a model and its data, run batch by batch under the monitor."""
