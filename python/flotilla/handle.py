"""ServeHandle: calls an endpoint from Python, as Ray Serve 1.x's handle did, over the admin API."""

import asyncio
import base64
import concurrent.futures
import json
import threading
import urllib.parse

from .errors import FlotillaError

_pool = None
_pool_lock = threading.Lock()


def _executor():
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="flotilla-handle")
        return _pool


def to_wire(value):
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": base64.b64encode(bytes(value)).decode("ascii")}
    return {"json": value}


def from_wire(wire):
    if "text" in wire:
        return wire["text"]
    if "bytes" in wire:
        return base64.b64decode(wire["bytes"])
    return wire.get("json")


class ObjectRef:
    """The answer of one handle call, under way: `await ref`, `ref.result()` or `flotilla.get(ref)` (Ray's ray.get)."""

    def __init__(self, future):
        self._future = future

    def result(self, timeout=None):
        """Waits for the answer and returns it; raises the call's FlotillaError (HandlerError when the handler raised)."""
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise FlotillaError("REQUEST_TIMEOUT", f"no answer within {timeout} s (the call goes on)", 504) from None

    def done(self):
        return self._future.done()

    def __await__(self):
        return asyncio.wrap_future(self._future).__await__()

    def __repr__(self):
        return f"ObjectRef({'done' if self._future.done() else 'pending'})"


def get(refs, timeout=None):
    """Ray's ray.get: the answer of one ObjectRef, or a list of answers for a list of them."""
    if isinstance(refs, ObjectRef):
        return refs.result(timeout)
    if isinstance(refs, (list, tuple)) and all(isinstance(ref, ObjectRef) for ref in refs):
        return [ref.result(timeout) for ref in refs]
    raise TypeError(f"flotilla.get takes an ObjectRef or a list of them, not {type(refs).__name__}")


class ServeHandle:
    """Calls an endpoint through its traffic policy, as HTTP does. `remote(x)` sends x as the request body
    (a str as text, bytes as bytes, anything else as JSON; no argument as a GET) and answers at once with an ObjectRef."""

    def __init__(self, admin, endpoint_name, method_name=None, shard_key=None):
        self._admin = admin
        self.endpoint_name = endpoint_name
        self.method_name = method_name
        self.shard_key = shard_key

    def options(self, method_name=None, shard_key=None, http_method=None, http_headers=None):
        if http_method is not None or http_headers is not None:
            raise FlotillaError(
                "INVALID_ARGUMENT",
                "handle calls over the admin API take no http_method or http_headers: the handler gets a POST with the "
                "argument as its body (a GET without one); call the endpoint over HTTP to choose them",
                400,
            )
        return ServeHandle(
            self._admin,
            self.endpoint_name,
            method_name if method_name is not None else self.method_name,
            shard_key if shard_key is not None else self.shard_key,
        )

    def remote(self, *args, **kwargs):
        """One argument is the request body (the handler gets a request); two or more, or keyword arguments, are passed
        to the method as they are (Ray 1.x's handle.remote(*args, **kwargs)), as JSON values."""
        body = {}
        if len(args) > 1 or kwargs:
            try:
                json.dumps([args, kwargs], allow_nan=False)
            except (TypeError, ValueError) as error:
                raise FlotillaError(
                    "INVALID_ARGUMENT", f"handle arguments travel as JSON, and these cannot ({error}): pass JSON values", 400
                ) from None
            body["args"], body["kwargs"] = list(args), kwargs
        elif args:
            body["input"] = to_wire(args[0])
        if self.method_name is not None:
            body["methodName"] = self.method_name
        if self.shard_key is not None:
            body["shardKey"] = str(self.shard_key)
        path = f"/api/endpoints/{urllib.parse.quote(self.endpoint_name, safe='')}/call"
        return ObjectRef(_executor().submit(lambda: from_wire(self._admin.call("POST", path, body))))

    def __repr__(self):
        return f"ServeHandle(endpoint='{self.endpoint_name}')"
