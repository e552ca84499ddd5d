"""The MLflow model registry: versions, the @champion/@challenger aliases, downloads for serving."""
