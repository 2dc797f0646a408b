"""Exceptions that end a stage with one clear message instead of a traceback."""


class LoraMnistError(Exception):
    """Base class: any error a user can fix (bad params, bad data, tampered artifacts)."""


class ConfigError(LoraMnistError, ValueError):
    """A param in params.yaml is unknown, missing, of the wrong type or out of range."""


class DataError(LoraMnistError):
    """Input data is missing, corrupted or does not match its expected checksum."""


class ArtifactError(LoraMnistError):
    """A model, adapter or snapshot is missing, malformed or does not match what made it."""
