"""Serving on Ray Serve: the ingress (FastAPI), the batched Scorer, and the app builder."""
