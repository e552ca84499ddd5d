"""The MLflow model registry: versions, the @champion/@challenger aliases, downloads for serving,
held-out evaluation and the promotion gate."""
