"""The registry's aliases, without importing MLflow: serving follows ``champion``; a new
version enters as ``challenger`` until the gate promotes it."""

__all__ = ["CHAMPION", "CHALLENGER"]

CHAMPION = "champion"
CHALLENGER = "challenger"
