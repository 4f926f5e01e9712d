"""attnzoo: efficient-attention vision backbones registered with timm.

``import zoo`` registers every zoo model with timm, after which ``timm.create_model(name)`` builds it.
"""
from zoo import models  # noqa: F401  (registers the models with timm)
from zoo.models import list_models

__all__ = ["list_models"]
__version__ = "0.1.0"
