"""Dense methods by name. A new method is one module registered with `@register_method`."""
from .base import COMPONENTS, METHODS, DenseMethod, register_method
from . import clip, peers, sfp  # noqa: F401  (registration)

__all__ = ["COMPONENTS", "METHODS", "DenseMethod", "register_method"]
