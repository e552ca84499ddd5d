"""Drift monitoring: data validation (great-expectations) and distribution drift on the event
log, triggering retraining. Arrives with the drift monitor issue."""
