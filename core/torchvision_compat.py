"""torchvision beside the CPU build of torch, so that timm (and transformers) import.

PyPI's torchvision wheels are CUDA builds: beside the CPU torch pin their C extension
(``torchvision/_C.so``) does not load, and ``import torchvision`` then fails in its
``_meta_registrations`` ("operator torchvision::nms does not exist"), which takes timm and
transformers (which import torchvision where it is installed) down with it. The only ops it
needs to exist at import are the two it registers fake kernels for unconditionally, ``nms``
and ``qnms``; every other registration is guarded by "the C extension loaded".

:func:`install` puts a finder first on ``sys.meta_path`` that, the moment anything imports
``torchvision``, checks once: with a CPU torch (``torch.version.cuda`` is None) whose
torchvision C extension does not load, it defines those two op schemas (no kernels: calling
``torchvision.ops.nms`` then raises, which no classification backbone does) and lets the
normal import go on. A torchvision whose extension loads (a CPU wheel, or a CUDA torch) is
left exactly as it is. ``bastion/__init__.py`` installs it, so it is in place in every
process that imports Bastion (Ray workers and Serve replicas included) before any of its
modules can import torchvision.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["install", "patched"]

_SCHEMAS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
            "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_state: dict[str, object] = {}


def patched() -> bool:
    """Whether the two schemas were defined here (torchvision's own ops are not loaded)."""
    return bool(_state.get("patched"))


def _prepare() -> None:
    if "checked" in _state:
        return
    _state["checked"] = True
    import torch

    if torch.version.cuda is not None:  # a CUDA torch: torchvision's extension is its own
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return
    so = [p for d in spec.submodule_search_locations for p in Path(d).glob("_C*.so")]
    try:
        if so:
            torch.ops.load_library(str(so[0]))
            return  # the extension loads (a CPU wheel): it registers the real ops itself
    except (OSError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        lib.define(schema)
    _state["lib"] = lib  # the definitions live as long as the library object
    _state["patched"] = True


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname == "torchvision":
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _Finder)]
            _prepare()
        return None  # the normal finders import it


def install() -> None:
    """Put the finder in place (once per process); a no-op if torchvision is imported."""
    if "torchvision" in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
