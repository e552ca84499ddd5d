"""What the integration tests share to send media."""

from __future__ import annotations

import base64

__all__ = ["b64"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
