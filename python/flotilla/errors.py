"""Flotilla's errors in Python: each carries the stable code the control plane answered with."""

import builtins


class FlotillaError(Exception):
    """An error Flotilla raised on purpose. Branch on `code` (e.g. 'BACKEND_IN_USE'); `status` is its HTTP status."""

    def __init__(self, code, message, status=None, details=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details = details or {}

    def __str__(self):
        return f"{self.code}: {self.message}"


class HandlerError(FlotillaError):
    """A handler raised in its replica (code HANDLER_ERROR). `error_type` is the name of what it raised there.

    When that is a built-in exception (ValueError, KeyError, ...), the error raised here is also an instance of it,
    as Ray's RayTaskError is, so `except ValueError` catches it.
    """

    def __init__(self, code, message, status=None, details=None):
        super().__init__(code, message, status, details)
        self.error_type = (details or {}).get("type") or "Exception"

    def __str__(self):
        return f"{self.code}: {self.error_type}: {self.message}"


_handler_classes = {}


def _handler_error_class(error_type):
    if error_type in _handler_classes:
        return _handler_classes[error_type]
    base = getattr(builtins, error_type or "", None)
    cls = HandlerError
    if isinstance(base, type) and issubclass(base, Exception) and base is not Exception:
        try:
            cls = type(error_type, (HandlerError, base), {"__module__": __name__})
        except TypeError:  # a built-in whose layout cannot be combined (e.g. OSError)
            cls = HandlerError
    _handler_classes[error_type] = cls
    return cls


def error_from_answer(code, message, status=None, details=None):
    """The exception for an error the admin API answered: HANDLER_ERROR as a HandlerError, others as FlotillaError."""
    if code == "HANDLER_ERROR":
        cls = _handler_error_class((details or {}).get("type"))
        error = cls.__new__(cls)
        HandlerError.__init__(error, code, message, status, details)
        return error
    return FlotillaError(code, message, status, details)
