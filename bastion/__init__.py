"""Bastion: Trust & Safety moderation on Ray. Every import name of the project is under
``bastion.``; the stage folders at the top of the checkout (``core/``, ``serving/``,
``training/``, ``drift/``, ``registry/``, ``review/``) are mapped onto it by setuptools'
``package-dir`` (see pyproject.toml)."""

__version__ = "0.1.0"

# Before any module can import torchvision (timm and transformers do): PyPI's torchvision
# beside the CPU torch needs two op schemas defined first (core/torchvision_compat.py).
from bastion.core import torchvision_compat as _torchvision_compat  # noqa: E402

_torchvision_compat.install()
