"""Dense methods by name. A new method is one module in this package registered with `@register_method`:
every module here is imported, so registration needs no list to edit."""
import importlib
import pkgutil

from .base import METHODS, DenseMethod, register_method

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "DenseMethod", "register_method"]
