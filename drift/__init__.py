"""Drift monitoring: data validation (great-expectations) and drift tests on windows of the
event log, and the triggers that submit retraining."""
