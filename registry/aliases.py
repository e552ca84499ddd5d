"""The registry's aliases and model names, without importing MLflow: serving follows
``champion``; a new version enters as ``challenger`` until the gate promotes it. The image
heads are a registered model of their own beside the text model (:func:`image_model_name`),
with the same aliases and the same gate."""

__all__ = ["CHAMPION", "CHALLENGER", "IMAGE_SUFFIX", "MULTILINGUAL", "SHADOW", "image_model_name"]

CHAMPION = "champion"
CHALLENGER = "challenger"
# A version on a multilingual encoder, served beside @champion for the languages the routing
# sends it (serving.multilingual_languages): the English champion keeps English.
MULTILINGUAL = "multilingual"
# A candidate scoring a sample of live traffic beside @champion, never deciding (or, as a
# canary, deciding a share of one tenant's): ``registry.shadow``.
SHADOW = "shadow"
IMAGE_SUFFIX = "-image"


def image_model_name(model_name: str) -> str:
    """The registered model of the image heads that go with the text model ``model_name``."""
    return f"{model_name}{IMAGE_SUFFIX}"
