"""Measurement: energy windows over sensors, the idle baseline, trials and the power sampler."""
