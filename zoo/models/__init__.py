"""The zoo's model families, one file each, registered with timm on import.

Naming: every model keeps its paper's variant name in timm's lowercase style (``biformer_small``,
``dinat_tiny``). Where timm itself already registers a family under that name (DaViT's ``davit_*``), the zoo
registers the same name with the prefix ``zoo_`` (``zoo_davit_tiny``) and never replaces timm's entry.
"""
import importlib
import pkgutil

import timm
from timm.models import model_entrypoint

# Every module in this package is a family file: importing it registers its models with timm.
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith('_'):
        importlib.import_module(f'{__name__}.{_module.name}')

__all__ = ["list_models"]


def list_models(pattern: str = "*") -> list[str]:
    """Names of the models the zoo registers (a subset of ``timm.list_models``), matching `pattern`."""
    return [n for n in timm.list_models(pattern) if model_entrypoint(n).__module__.startswith(__name__ + ".")]
