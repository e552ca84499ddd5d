"""The Dockerfile builds on Ray's official image at the pinned Ray and Python and installs the
project the way the Makefile does; the kubectl it adds matches the Kubernetes we validate."""

from __future__ import annotations

import re

from k8s.render import REPO
from k8s.validate import K8S_VERSION

DOCKERFILE = (REPO / "Dockerfile").read_text()


def _args() -> dict[str, str]:
    """Default of every ARG; the first one wins (an ARG re-declared after FROM keeps it)."""
    found: dict[str, str] = {}
    for name, value in re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE, flags=re.M):
        found.setdefault(name, value)
    return found


def _expand(text: str) -> str:
    args = _args()
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], text)


def test_base_image_is_rays_official_cpu_image_at_the_pins(pins: dict[str, str]) -> None:
    [base] = re.findall(r"^FROM (\S+)$", DOCKERFILE, flags=re.M)
    assert _expand(base) == f"rayproject/ray:{pins['ray']}-{pins['python_tag']}-cpu"
    assert _args()["RAY_VERSION"] == pins["ray"]
    # The build re-checks the Ray it ends up with against the same ARG.
    assert re.search(r"^ARG RAY_VERSION$", DOCKERFILE, flags=re.M)
    assert "ray.__version__" in DOCKERFILE


def test_install_order_and_pins_follow_the_makefile(pins: dict[str, str]) -> None:
    makefile = (REPO / "Makefile").read_text()
    steps = [line.strip() for line in DOCKERFILE.splitlines() if "pip install" in line]
    assert steps[0] == (
        f"RUN pip install torch=={pins['torch']} --index-url https://download.pytorch.org/whl/cpu"
    )
    assert any(s.endswith("pip install . \\") for s in steps[1:])
    [no_deps] = re.findall(r"pip install --no-deps (.+)$", makefile, flags=re.M)
    assert f"pip install --no-deps {no_deps.strip()}" in DOCKERFILE
    assert re.search(r"psycopg2-binary==\S+ boto3==\S+", DOCKERFILE)  # MLflow server drivers


def test_kubectl_matches_the_validated_kubernetes_minor() -> None:
    assert _args()["KUBECTL_VERSION"].startswith(f"v{K8S_VERSION}.")


def test_only_the_package_sources_enter_the_build_context() -> None:
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:] for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "core", "serving"} <= allowed
    assert not allowed & {"k8s", ".venv", "tests", ".git"}
