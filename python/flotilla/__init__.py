"""Flotilla from Python: Ray Serve 1.x's backends-and-endpoints API (`from flotilla import serve`), served by Flotilla's
control plane on Docker, one container per replica. docs/python.md."""

from . import serve
from .config import BackendConfig
from .errors import FlotillaError, HandlerError
from .handle import ObjectRef, ServeHandle, get

__version__ = "0.1.0"
__all__ = ["BackendConfig", "FlotillaError", "HandlerError", "ObjectRef", "ServeHandle", "get", "serve"]
