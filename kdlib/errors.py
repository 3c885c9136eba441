"""Errors that kdflow reports to the user as one clear line, never as a traceback."""


class KdflowError(Exception):
    """A user-facing error: bad input, bad config, a missing runtime or an unreachable server."""


class ConfigError(KdflowError):
    """The configuration (config.yaml, --config overrides or a stage's parameters) is invalid."""


class DataError(KdflowError):
    """An input file is missing, malformed or inconsistent."""


class BackendUnavailable(KdflowError):
    """The requested tensor library cannot be imported in this runtime."""
