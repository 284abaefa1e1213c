"""Errors that reach the user as one sentence naming the problem and the fix."""


class MetalabError(Exception):
    """Base class: the message is shown to the user without a traceback."""


class ConfigError(MetalabError):
    """A configuration value that cannot work; raised before any training starts."""


class DataError(MetalabError):
    """A data set that is missing, incomplete or corrupt."""
