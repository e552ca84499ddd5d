"""Bastion: Trust & Safety moderation on Ray. Every import name of the project is under
``bastion.``; the stage folders at the top of the checkout (``core/``, ``serving/``,
``training/``, ``drift/``, ``registry/``, ``review/``) are mapped onto it by setuptools'
``package-dir`` (see pyproject.toml)."""

__version__ = "0.1.0"
