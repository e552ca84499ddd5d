"""Render a kustomization with the real kustomize: ``kubectl kustomize <dir>``, parsed.

The cluster applies the same thing (``kubectl apply -k``), so the tests and
:mod:`k8s.validate` see exactly what a cluster would get. kubectl carries Kustomize v5 since
1.27; the project's image carries it too (see Dockerfile). Nothing here contacts a cluster:
``kubectl kustomize`` only reads files.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from k8s.errors import KubectlNotFoundError, KustomizeError

__all__ = ["build", "kubectl_path", "INSTALL_KUBECTL"]

Resource = dict[str, Any]

INSTALL_KUBECTL = ("install kubectl 1.27 or newer (it carries Kustomize v5): "
                   "https://kubernetes.io/docs/tasks/tools/ , e.g. `apt-get install kubectl` "
                   "from the Kubernetes apt repository, or put the binary on PATH")
_FILENAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# Rendering reads a few dozen small files; anything near this means kubectl is stuck.
_TIMEOUT_S = 60


def kubectl_path() -> str | None:
    """The kubectl on PATH, or None."""
    return shutil.which("kubectl")


def build(path: str | Path, kubectl: str | None = None) -> list[Resource]:
    """Render the kustomization in directory ``path`` into its list of resources.

    Args:
        path: a directory holding a ``kustomization.yaml``.
        kubectl: the kubectl binary to run (default: the one on PATH).

    Raises:
        KubectlNotFoundError: there is no kubectl to run.
        KustomizeError: kustomize refuses the tree; the message carries its own.
    """
    root = Path(path)
    if not any((root / name).is_file() for name in _FILENAMES):
        raise KustomizeError(f"{root}: no kustomization.yaml in this directory")
    binary = kubectl or kubectl_path()
    if binary is None or not Path(binary).is_file():
        raise KubectlNotFoundError(f"kubectl not found ({binary or 'not on PATH'}): "
                                   f"{INSTALL_KUBECTL}")
    try:
        done = subprocess.run([binary, "kustomize", str(root)], capture_output=True, text=True,
                              timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise KustomizeError(f"{root}: `kubectl kustomize` did not finish in {_TIMEOUT_S} s"
                             ) from None
    if done.returncode != 0:
        raise KustomizeError(f"{root}: `kubectl kustomize` failed: {done.stderr.strip()}"
                             + _missing_secret_hint(root))
    docs = [d for d in yaml.safe_load_all(done.stdout) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc:
            raise KustomizeError(f"{root}: kustomize wrote something that is not a resource")
    return docs


def _missing_secret_hint(root: Path) -> str:
    """The git-ignored secret files an overlay reads and the checkout lacks, and the fix."""
    absent = sorted(e.with_suffix("") for e in root.rglob("*.example")
                    if not e.with_suffix("").exists())
    if not absent:
        return ""
    names = ", ".join(str(p.relative_to(root)) for p in absent)
    return (f"; missing {names}: copy each *.example to the name without .example and fill in "
            "real values")
