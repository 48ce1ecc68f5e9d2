"""Errors the framework raises for bad input; each names the file, key or value at fault."""


class SFPError(Exception):
    """Base class: main.py prints these as one clear line instead of a traceback."""


class ConfigError(SFPError, ValueError):
    """A config value is missing, of the wrong type or out of range."""


class DataError(SFPError, ValueError):
    """A dataset file is missing, unreadable or inconsistent."""


class WeightsError(SFPError, FileNotFoundError):
    """Model weights could not be found or loaded."""


class NumericalError(SFPError, ArithmeticError):
    """A tensor of the evaluation became non-finite (NaN or inf): the numbers would be silently wrong."""
