"""Image backbones by registry (core.image_backbones): the shipped image-safety model, and a
tenant's own timm checkpoint or ONNX export, from a local file or an MLflow artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bastion.core.errors import ModelError, UnknownPluginError
from bastion.core.image_backbones import create_image_backbone, image_backbone_names


def tiny_classifier(path: Path) -> Path:
    """A classifier in the shape of a timm export: global average pool, then a linear head
    whose three logits read the mean red, green and blue (so a red image is class 0)."""
    import onnx
    from onnx import TensorProto, helper

    w = np.eye(3, dtype=np.float32) * 10.0
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["features"]),
         helper.make_node("Gemm", ["features", "w", "b"], ["logits"], transB=1)],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor("w", TensorProto.FLOAT, [3, 3], w.flatten().tolist()),
         helper.make_tensor("b", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def solid(rgb: tuple[int, int, int], shape: tuple[int, int] = (40, 60)) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, np.uint8), (*shape, 3)).copy()


OPTIONS = {"classes": {"graphic": 0, "sexual": 1, "safe": 2}, "size": 32,
           "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def test_the_registry_knows_both_and_lists_them_for_an_unknown_name() -> None:
    assert image_backbone_names() == ["image-safety", "onnx", "timm"]
    with pytest.raises(UnknownPluginError, match="known: image-safety, onnx, timm"):
        create_image_backbone("timm-nope")


def test_a_tenants_onnx_export_scores_maps_and_embeds(tmp_path: Path) -> None:
    model = create_image_backbone("onnx", uri=str(tiny_classifier(tmp_path / "m.onnx")),
                                  **OPTIONS)
    assert model.dim == 3 and model.classes == ("graphic", "sexual", "safe")
    probs, emb = model([solid((255, 0, 0)), solid((0, 255, 0)), solid((0, 0, 255))])
    assert probs.shape == (3, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert list(probs.argmax(axis=1)) == [0, 1, 2]  # red: graphic, green: sexual, blue: safe
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert model.status()["features"] == "features"  # the tensor the head reads


def test_without_a_safe_column_safe_is_one_minus_the_larger(tmp_path: Path) -> None:
    model = create_image_backbone("onnx", uri=str(tiny_classifier(tmp_path / "m.onnx")),
                                  **{**OPTIONS, "classes": {"graphic": 0, "sexual": 1}})
    probs, _ = model([solid((255, 0, 0))])
    assert probs[0, 2] == pytest.approx(1 - max(probs[0, 0], probs[0, 1]))


def test_an_export_logged_to_mlflow_is_served_from_its_artifact_uri(tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("images", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(exp)
    client.log_artifact(run.info.run_id, str(tiny_classifier(tmp_path / "model.onnx")))
    model = create_image_backbone("onnx", uri=f"runs:/{run.info.run_id}/model.onnx",
                                  tracking_uri=uri, **OPTIONS)
    probs, _ = model([solid((0, 255, 0))])
    assert int(probs.argmax()) == 1


def test_bad_backbones_say_how_to_fix_them(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        create_image_backbone("onnx", uri=str(tmp_path / "none.onnx"), **OPTIONS)
    with pytest.raises(ModelError, match=r"\['sexual'\]"):
        create_image_backbone("onnx", uri=str(tiny_classifier(tmp_path / "m.onnx")),
                              classes={"graphic": 0})


def timm_checkpoint(path: Path, num_classes: int = 3, seed: int = 0) -> Path:
    """A checkpoint of timm's smallest test architecture (random weights, seeded), saved as a
    tenant would save theirs (the state dict, ``torch.save``)."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model("test_convnext", pretrained=False, num_classes=num_classes)
    torch.save(model.state_dict(), path)
    return path


def test_a_tenants_timm_checkpoint_is_run_by_timm_itself(tmp_path: Path) -> None:
    import timm
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    ckpt = timm_checkpoint(tmp_path / "model.pth")
    model = create_image_backbone("timm", model="test_convnext", checkpoint=str(ckpt),
                                  classes={"graphic": 0, "sexual": 1, "safe": 2})
    images = [solid((255, 0, 0), (48, 64)), solid((10, 200, 30), (80, 50))]
    probs, emb = model(images)
    assert model.classes == ("graphic", "sexual", "safe") and probs.shape == (2, 3)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # the same as timm's own evaluation of the checkpoint: its transform, its classifier
    ref = timm.create_model("test_convnext", pretrained=False, num_classes=3)
    ref.load_state_dict(torch.load(ckpt))
    ref.eval()
    tf = create_transform(**resolve_data_config({}, model=ref))
    with torch.inference_mode():
        want = torch.softmax(ref(torch.stack([tf(Image.fromarray(im)) for im in images])), 1)
    np.testing.assert_allclose(probs, want.numpy(), atol=1e-5)
    status = model.status()
    assert status["architecture"] == "test_convnext" and status["num_classes"] == 3
    assert len(status["sha256"]) == 64 and status["dim"] == emb.shape[1]


def test_a_timm_feature_extractor_has_no_outputs_for_policies_to_read(tmp_path: Path) -> None:
    ckpt = timm_checkpoint(tmp_path / "features.pth", num_classes=0)
    model = create_image_backbone("timm", model="test_convnext", checkpoint=str(ckpt))
    probs, emb = model([solid((0, 0, 255))])
    assert model.classes == () and probs.shape == (1, 0) and emb.shape == (1, model.dim)


def test_a_timm_checkpoint_logged_to_mlflow_is_served_from_its_artifact_uri(
        tmp_path: Path) -> None:
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("images", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(exp)
    client.log_artifact(run.info.run_id, str(timm_checkpoint(tmp_path / "model.pth")))
    model = create_image_backbone("timm", model="test_convnext", tracking_uri=uri,
                                  checkpoint=f"runs:/{run.info.run_id}/model.pth",
                                  classes={"graphic": 0, "sexual": 1})
    probs, _ = model([solid((0, 255, 0))])
    assert probs.shape == (1, 3)


def test_bad_timm_backbones_say_how_to_fix_them(tmp_path: Path) -> None:
    ckpt = timm_checkpoint(tmp_path / "model.pth")
    with pytest.raises(ModelError, match="timm has no architecture 'convnext_nope'"):
        create_image_backbone("timm", model="convnext_nope", checkpoint=str(ckpt))
    with pytest.raises(ModelError, match="not a checkpoint of timm's resnet18"):
        create_image_backbone("timm", model="resnet18", checkpoint=str(ckpt))
    with pytest.raises(ModelError, match="does not exist"):
        create_image_backbone("timm", model="test_convnext", checkpoint=str(tmp_path / "x.pth"))
    with pytest.raises(ModelError, match="classifier has 3 output"):
        create_image_backbone("timm", model="test_convnext", checkpoint=str(ckpt),
                              classes={"graphic": 0, "sexual": 5})


def test_torchvision_imports_beside_the_cpu_torch() -> None:
    import torch
    import torchvision  # PyPI's CUDA build: its C extension does not load here

    from bastion.core import torchvision_compat

    assert torchvision.__version__
    if torch.version.cuda is None:
        import torchvision.transforms  # what timm's transforms use
        assert torchvision.transforms.Resize
        # either its own extension loaded, or only the two schemas were defined here
        assert torchvision_compat.patched() != torchvision.extension._has_ops()
