"""Training: the starter model from packaged real data, and (later) retraining on Ray Train."""
