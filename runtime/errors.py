"""Our exception hierarchy. Library return codes become these at the boundary."""


class EdgewatchError(Exception):
    """Base of every error edgewatch raises on purpose."""


class ConfigError(EdgewatchError):
    """A device config or manifest is invalid; the message names the path (and line)."""


class ModelError(EdgewatchError):
    """A model bundle can't be loaded or doesn't match its manifest."""


class SourceError(EdgewatchError):
    """A camera or sensor source can't be opened or read."""


class SinkError(EdgewatchError):
    """An alert sink can't deliver."""
