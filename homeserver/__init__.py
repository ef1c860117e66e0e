"""A Matrix homeserver: client-server API, event graph, sync; federation lives in `federation`."""

__version__ = "0.1.0"
