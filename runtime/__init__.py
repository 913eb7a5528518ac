"""edgewatch: edge-device inference runtime."""

__version__ = "0.1.0"
