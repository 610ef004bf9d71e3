"""Flotilla's Python replica runtime: the replica protocol (docs/protocol.md) on uvicorn, handing handlers Starlette requests.

Runs inside each Python replica container. It listens at once and answers health
checks ('starting') while it loads the entry's module (a file, a dotted module, or
a cloudpickled .pkl), constructs the class (with initArgs) and applies the
entry's live config (reconfigure, batching), then serves ('ready'). If any of
that fails it prints one JSON line (event init_failed) on stderr and exits 1.
PUT /-/flotilla/config changes live config without a restart, for a caller that
presents the entry's control secret (403 otherwise). On SIGTERM it reports
'draining', stops accepting connections, finishes the requests in flight and
exits 0.

Handlers get a `starlette.requests.Request` whose body has already been read.
Sync handlers run on a thread pool, async ones on the event loop. User code may
import helpers from this module:

    from flotilla_replica import Request, Response, StreamingResponse, accept_batch, sse

A generator or async generator handler streams its chunks as they are produced,
chunked: str and bytes as they are, other values as one JSON line each. A
client that leaves closes the generator (GeneratorExit) at the next chunk.
"""

import asyncio
import concurrent.futures
import contextlib
import functools
import hashlib
import hmac
import importlib
import importlib.util
import inspect
import json
import logging
import os
import signal
import socket
import sys
import threading
import traceback
from urllib.parse import quote

import uvicorn
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

HEALTH_PATH = "/-/flotilla/health"
CONFIG_PATH = "/-/flotilla/config"
METHOD_HEADER = b"x-flotilla-method"
CALL_HEADER = b"x-flotilla-call"
PATH_PARAMS_HEADER = b"x-flotilla-path-params"
CONTROL_SECRET_HEADER = b"x-flotilla-control-secret"
ERROR_HEADER = "x-flotilla-error"
DEFAULT_ENTRY_FILE = "/run/flotilla/entry.json"
DEFAULT_PORT = 8000
APP_DIR = "/app"
LISTEN_BACKLOG = 4096
KEEP_ALIVE_S = 65
HANDLER_THREADS = int(os.environ.get("FLOTILLA_HANDLER_THREADS") or 64)
BATCH_MARKS = ("_serve_accept_batch", "accepts_batch", "acceptsBatch")
CLIENT_GONE = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)

SSE_KEEP_ALIVE_S = 15
BATCH_STREAM = (
    "a batch handler cannot stream: a handler marked accept_batch answers a list of requests with a list of whole "
    "values, not a generator; drop accept_batch or return whole values"
)

__all__ = ["Request", "Response", "StreamingResponse", "accept_batch", "sse"]


def accept_batch(target):
    """Marks a function, a class or a method as taking a list of requests and returning a list of results (Ray 1.x's serve.accept_batch)."""
    target._serve_accept_batch = True
    return target


def _accepts_batch(target):
    function = getattr(target, "__func__", target)
    return any(getattr(function, mark, False) is True for mark in BATCH_MARKS)


def _sse_frame(value):
    text = value if isinstance(value, str) else _to_json(value).decode("utf-8")
    return "".join(f"data: {line}\n" for line in text.splitlines() or [""]) + "\n"


def sse(events):
    """Answers with each value of `events` as a server-sent event (text/event-stream): strings as they are, others as JSON.

    An async iterable also gets a keep-alive comment every SSE_KEEP_ALIVE_S seconds of silence.
    """
    if hasattr(events, "__aiter__"):

        async def framed():
            iterator = events.__aiter__()
            pending = None
            try:
                while True:
                    pending = pending or asyncio.ensure_future(iterator.__anext__())
                    done, _ = await asyncio.wait({pending}, timeout=SSE_KEEP_ALIVE_S)
                    if not done:
                        yield ": keep-alive\n\n"
                        continue
                    pending = None
                    try:
                        value = done.pop().result()
                    except StopAsyncIteration:
                        return
                    yield _sse_frame(value)
            finally:
                if pending is not None:
                    pending.cancel()
                if hasattr(iterator, "aclose"):
                    await iterator.aclose()

        chunks = framed()
    else:
        chunks = (_sse_frame(value) for value in events)
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(chunks, headers=headers, media_type="text/event-stream")


class HandlerError(Exception):
    def __init__(self, code, message, error_type="Error"):
        super().__init__(message)
        self.code = code
        self.error_type = error_type


def _log(event, **fields):
    sys.stderr.write(json.dumps({"component": "replica", "event": event, **fields}) + "\n")
    sys.stderr.flush()


class _JsonLogHandler(logging.Handler):
    """uvicorn's own warnings and errors, as the runtime's JSON lines."""

    def emit(self, record):
        fields = {"message": record.getMessage(), "logger": record.name}
        if record.exc_info:
            fields["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        _log("server_error" if record.levelno >= logging.ERROR else "server_warning", **fields)


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _to_json(value):
    return json.dumps(value, default=_json_default, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _is_async(target):
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(getattr(target, "__call__", None))


def _is_generator_function(target):
    function = getattr(target, "__func__", target)
    return inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)


def _is_stream(value):
    return inspect.isgenerator(value) or inspect.isasyncgen(value)


class Runner:
    """Calls user code: coroutine functions on the event loop, everything else on a thread pool."""

    def __init__(self, loop):
        self.loop = loop
        self.pool = concurrent.futures.ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="flotilla-handler")

    async def call(self, target, *args):
        if _is_async(target):
            return await target(*args)
        result = await self.loop.run_in_executor(self.pool, target, *args)
        return await result if inspect.isawaitable(result) else result

    def call_from_thread(self, target, *args):
        """For code that runs on a pool thread (loading): an async target runs on the loop, and this thread waits."""
        result = target(*args)
        if inspect.isawaitable(result):
            return asyncio.run_coroutine_threadsafe(_awaited(result), self.loop).result()
        return result


async def _awaited(awaitable):
    return await awaitable


def _load_module(path):
    if path.endswith(".pkl"):
        import cloudpickle

        with open(path, "rb") as file:
            return {"default": cloudpickle.load(file)}
    module_name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"{path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return vars(module)


def _find_export(entry):
    """The function or class the entry names: in a file, a cloudpickled .pkl, or a dotted module under /app ('pkg.mod:Name' or 'pkg.mod.Name')."""
    module_path = entry["module"]
    export_name = entry.get("exportName") or "default"
    for path in (APP_DIR, os.path.dirname(module_path)):
        if path not in sys.path:
            sys.path.insert(0, path)
    if os.path.isfile(module_path):
        namespace, where = _load_module(module_path), module_path
    else:
        dotted = os.path.relpath(module_path, APP_DIR) if module_path.startswith(APP_DIR + "/") else module_path
        if "/" in dotted or dotted.endswith(".py") or not dotted.replace(".", "").replace("_", "").isalnum():
            raise RuntimeError(f"{module_path} does not exist in the image")
        if export_name == "default" and "." in dotted:
            dotted, export_name = dotted.rsplit(".", 1)
        namespace, where = vars(importlib.import_module(dotted)), dotted
    exported = namespace.get(export_name)
    if not callable(exported):
        found = ", ".join(name for name, value in namespace.items() if callable(value) and not name.startswith("_"))
        raise RuntimeError(
            f"{where} has no function or class '{export_name}' (found: {found or 'none'}); name one with 'file.py:Name'"
        )
    return exported


class LoadedBackend:
    """The user's code, loaded: its entry points by method name ('call' is the function, or the class's call/__call__)."""

    def __init__(self, entry, runner):
        exported = _find_export(entry)
        self.class_batches = _accepts_batch(exported)
        if inspect.isclass(exported):
            self.name = exported.__name__
            self.instance = runner.call_from_thread(exported, *entry.get("initArgs", []))
            self.function = None
        else:
            self.name = getattr(exported, "__name__", "the backend function")
            self.instance = None
            self.function = exported
        self.has_reconfigure = self.instance is not None and callable(getattr(self.instance, "reconfigure", None))
        self._targets = {}

    def target(self, name):
        """The callable for a method name, and whether it takes batches; raises AttributeError for a name it lacks."""
        found = self._targets.get(name)
        if found is None:
            found = self._resolve(name)
            self._targets[name] = found
        return found

    def _resolve(self, name):
        if self.function is not None:
            if name != "call":
                raise AttributeError(f"function backend {self.name} has no method '{name}'; only class backends do")
            return self.function, self.class_batches
        if name == "call":
            method = getattr(self.instance, "call", None)
            if not callable(method):
                method = getattr(self.instance, "__call__", None) if callable(self.instance) else None
        else:
            method = None if name.startswith("_") else getattr(self.instance, name, None)
        if not callable(method):
            raise AttributeError(f"{self.name} has no method '{name}'")
        return method, _accepts_batch(method) or (name == "call" and self.class_batches)

    def batch_targets(self):
        """Every entry point marked accept_batch, by method name."""
        if self.function is not None:
            return {"call": self.function} if self.class_batches else {}
        found = {}
        try:
            method, batches = self.target("call")
            if batches:
                found["call"] = method
        except AttributeError:
            pass
        cls = type(self.instance)
        for name in dir(cls):
            if not name.startswith("_") and name not in found and _accepts_batch(inspect.getattr_static(cls, name, None)):
                found[name] = self.target(name)[0]
        return found


class Batcher:
    """Groups calls of one entry point into batches: a batch runs as soon as max_batch_size calls
    wait, or batch_wait_timeout_s after the first of them arrived. Each caller gets its own
    element of the result; a result that is not a list of the batch's length fails every call
    of that batch."""

    def __init__(self, target, runner):
        self._target = target
        self._runner = runner
        self._queue = []
        self._timer = None
        self.max_batch_size = 1
        self.batch_wait_timeout_s = 0.0

    def configure(self, max_batch_size, batch_wait_timeout_s):
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self._flush_full()

    def submit(self, request):
        future = self._runner.loop.create_future()
        self._queue.append((request, future))
        self._flush_full()
        if self._queue and self._timer is None:
            self._timer = self._runner.loop.call_later(self.batch_wait_timeout_s, self._flush_all)
        return future

    def _flush_full(self):
        while len(self._queue) >= self.max_batch_size:
            self._start(self.max_batch_size)

    def _flush_all(self):
        self._timer = None
        while self._queue:
            self._start(self.max_batch_size)

    def _start(self, size):
        if self._timer is not None and len(self._queue) <= size:
            self._timer.cancel()
            self._timer = None
        batch, self._queue = self._queue[:size], self._queue[size:]
        asyncio.ensure_future(self._run(batch))

    async def _run(self, batch):
        try:
            results = await self._runner.call(self._target, [request for request, _ in batch])
            if not isinstance(results, (list, tuple)) or len(results) != len(batch):
                got = f"{len(results)} results" if isinstance(results, (list, tuple)) else f"a {type(results).__name__}"
                raise ValueError(
                    f"batch handler returned {got} for a batch of {len(batch)} requests; it must return a list of the same length"
                )
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
        except BaseException as error:  # noqa: BLE001 - every caller must hear of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)


class Replica:
    """The replica's state machine: starting -> ready -> draining."""

    def __init__(self):
        self.state = "starting"
        self.control_secret = None
        self.backend = None
        self.runner = None
        self.batchers = {}
        self.max_batch_size = 1
        self.batch_wait_timeout_s = 0.0
        self.config_lock = threading.Lock()

    def apply_config(self, backend, config):
        """Checks and applies live config; runs on a pool thread (reconfigure may block)."""
        with self.config_lock:
            self._apply_config(backend, config)

    def _apply_config(self, backend, config):
        max_batch_size = config.get("maxBatchSize", self.max_batch_size)
        batch_wait_timeout_s = config.get("batchWaitTimeoutS", self.batch_wait_timeout_s)
        batch_targets = backend.batch_targets()
        if max_batch_size > 1 and not batch_targets:
            raise HandlerError(
                "INVALID_CONFIG",
                f"maxBatchSize {max_batch_size} needs a handler that accepts batches "
                f"(serve.accept_batch on the function, the class, __call__ or a method); {backend.name} has none",
            )
        streaming = sorted(name for name, method in batch_targets.items() if _is_generator_function(method))
        if streaming:
            raise HandlerError("INVALID_CONFIG", f"{BATCH_STREAM} ({backend.name}: {', '.join(streaming)} is a generator function)")
        if "userConfig" in config:
            if not backend.has_reconfigure:
                raise HandlerError(
                    "INVALID_CONFIG", f"userConfig needs a class with a reconfigure(user_config) method; {backend.name} has none"
                )
            try:
                self.runner.call_from_thread(backend.instance.reconfigure, config["userConfig"])
            except Exception as error:  # noqa: BLE001
                raise HandlerError(
                    "RECONFIGURE_FAILED", f"{backend.name}.reconfigure raised: {error}", type(error).__name__
                ) from error
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.runner.loop.call_soon_threadsafe(self._configure_batchers, batch_targets, max_batch_size, batch_wait_timeout_s)

    def _configure_batchers(self, batch_targets, max_batch_size, batch_wait_timeout_s):
        for name, method in batch_targets.items():
            batcher = self.batchers.get(name)
            if batcher is None:
                batcher = self.batchers[name] = Batcher(method, self.runner)
            batcher.configure(max_batch_size, batch_wait_timeout_s)


replica = Replica()


def _header(scope, name):
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _read_body(receive):
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


def _head(status, content_type, length=None, extra=()):
    headers = [] if content_type is None else [(b"content-type", content_type)]
    headers.extend(extra)
    if length is not None:
        headers.append((b"content-length", b"%d" % length))
    if replica.state == "draining":
        headers.append((b"connection", b"close"))
    return {"type": "http.response.start", "status": status, "headers": headers}


async def _send_whole(send, status, content_type, body, extra=()):
    await send(_head(status, content_type, len(body), extra))
    await send({"type": "http.response.body", "body": body})


async def _send_error(send, status, code, error_type, message, handler=True):
    body = _to_json({"error": {"code": code, "type": error_type, "message": message}})
    extra = [(ERROR_HEADER.encode(), b"handler")] if handler else []
    await _send_whole(send, status, b"application/json", body, extra)


async def _send_value(scope, receive, send, result):
    if isinstance(result, str):
        return await _send_whole(send, 200, b"text/plain; charset=utf-8", result.encode("utf-8"))
    if isinstance(result, (bytes, bytearray, memoryview)):
        return await _send_whole(send, 200, b"application/octet-stream", bytes(result))
    if isinstance(result, Response):
        if replica.state == "draining":
            result.headers["connection"] = "close"
        tracked = _TrackedSend(send)
        try:
            return await result(scope, receive, tracked)
        except Exception as error:
            if not tracked.started:
                raise
            _log("stream_error", type=type(error).__name__, message=str(error), path=scope["path"], traceback=traceback.format_exc())
            _end_with_trailer(send, error)
            return None
    if _is_stream(result):
        return await _send_stream(scope, receive, send, result)
    return await _send_whole(send, 200, b"application/json", _to_json(result))


class _TrackedSend:
    """A send that remembers whether the head went out, so that a failing StreamingResponse ends with the error trailer."""

    def __init__(self, send):
        self._send = send
        self.started = False

    async def __call__(self, message):
        self.started = True
        await self._send(message)


def _client_gone(send):
    """Whether the caller hung up (uvicorn's cycle knows; a send to a caller that left does nothing)."""
    return getattr(getattr(send, "__self__", None), "disconnected", False) is True


def _encode_chunk(value):
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return _to_json(value) + b"\n"


def _stream_content_type(first):
    if first is None or isinstance(first, str):
        return b"text/plain; charset=utf-8"
    return b"application/octet-stream" if isinstance(first, (bytes, bytearray, memoryview)) else b"application/x-ndjson"


_END = object()


class _Chunks:
    """Steps a generator: a sync one on the pool (it may block), an async one on the loop; close() ends it (GeneratorExit)."""

    def __init__(self, source, runner):
        self._source = source
        self._runner = runner
        self._async = inspect.isasyncgen(source)

    async def next(self):
        if self._async:
            try:
                return await self._source.__anext__()
            except StopAsyncIteration:
                return _END
        return await self._runner.loop.run_in_executor(self._runner.pool, next, self._source, _END)

    async def close(self):
        if self._async:
            await self._source.aclose()
        else:
            await self._runner.loop.run_in_executor(self._runner.pool, self._source.close)


def _end_with_trailer(send, error):
    """Ends a chunked body with the x-flotilla-error trailer, which ASGI cannot say: written on uvicorn's transport, then closed.

    Where the server is not the uvicorn this was written for, the body stays incomplete (uvicorn closes the connection).
    """
    cycle = getattr(send, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or getattr(cycle, "chunked_encoding", None) is not True or getattr(cycle, "response_complete", True):
        return
    message = quote(f"{type(error).__name__}: {error}", safe="")
    cycle.response_complete = True
    cycle.keep_alive = False
    transport.write(b"0\r\n" + f"{ERROR_HEADER}: {message}\r\n".encode("ascii") + b"\r\n")
    transport.close()


async def _watch_disconnect(receive, gone):
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def _send_stream(scope, receive, send, source):
    """Sends the head with the first chunk, then each chunk as it comes; a client that leaves closes the generator,
    a failure midway ends the body with the error trailer."""
    chunks = _Chunks(source, replica.runner)
    gone = asyncio.Event()
    watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
    try:
        try:
            value = await chunks.next()
        except Exception as error:
            await chunks.close()
            raise error
        first = None if value is _END else value
        await send(_head(200, _stream_content_type(first), extra=[(b"transfer-encoding", b"chunked")]))
        try:
            while value is not _END:
                if gone.is_set():
                    await chunks.close()
                    return
                data = _encode_chunk(value)
                if data:
                    await send({"type": "http.response.body", "body": data, "more_body": True})
                value = await chunks.next()
        except Exception as error:  # noqa: BLE001 - a handler failing midway ends its body with the error trailer
            _log("stream_error", type=type(error).__name__, message=str(error), path=scope["path"], traceback=traceback.format_exc())
            _end_with_trailer(send, error)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        watcher.cancel()


def _digest(value):
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def _is_control_caller(presented):
    """Compares digests in constant time, so that neither the secret's length nor its content leaks."""
    return replica.control_secret is not None and presented is not None and hmac.compare_digest(_digest(presented), replica.control_secret)


async def _serve_config(send, body):
    try:
        config = json.loads(body.decode("utf-8") or "{}")
        if not isinstance(config, dict):
            raise HandlerError("INVALID_CONFIG", "the config must be a JSON object")
        await replica.runner.loop.run_in_executor(replica.runner.pool, replica.apply_config, replica.backend, config)
        await _send_whole(send, 200, b"application/json", b"{}")
    except HandlerError as error:
        await _send_error(send, 500, error.code, error.error_type, str(error))
    except Exception as error:  # noqa: BLE001
        await _send_error(send, 500, "INVALID_CONFIG", type(error).__name__, str(error))


def _call_arguments(body):
    """A handle call's own arguments (x-flotilla-call: args): a JSON object {"args": [...], "kwargs": {...}}."""
    try:
        call = json.loads(body.decode("utf-8"))
    except ValueError as error:
        raise ValueError(f"a call with {CALL_HEADER.decode()}: args needs a JSON body: {error}") from None
    if not isinstance(call, dict) or not isinstance(call.get("args", []), list) or not isinstance(call.get("kwargs", {}), dict):
        raise ValueError(f'a call with {CALL_HEADER.decode()}: args takes {{"args": [...], "kwargs": {{...}}}}')
    return call.get("args", []), call.get("kwargs", {})


async def _call_handler(scope, receive, body):
    backend = replica.backend
    method_name = _header(scope, METHOD_HEADER) or "call"
    target, batches = backend.target(method_name)
    if _header(scope, CALL_HEADER) == "args":
        args, kwargs = _call_arguments(body)
        if batches:
            if len(args) != 1 or kwargs:
                raise TypeError(f"a batched method takes one argument per call, got {len(args)} and {len(kwargs)} keyword")
            return await replica.batchers[method_name].submit(args[0])
        return await replica.runner.call(functools.partial(target, *args, **kwargs))
    request = Request(scope, receive)
    request._body = body
    if batches:
        return await replica.batchers[method_name].submit(request)
    return await replica.runner.call(target, request)


async def app(scope, receive, send):
    """The ASGI application: the protocol's own paths, then user requests."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == HEALTH_PATH:
        status = 200 if replica.state == "ready" else 503
        return await _send_whole(send, status, b"application/json", _to_json({"state": replica.state}))
    control = path == CONFIG_PATH and scope["method"] == "PUT"
    if control and not _is_control_caller(_header(scope, CONTROL_SECRET_HEADER)):
        await _read_body(receive)
        message = f"control calls need the replica's secret in {CONTROL_SECRET_HEADER.decode()}"
        return await _send_whole(send, 403, b"application/json", _to_json({"error": {"code": "FORBIDDEN", "message": message}}))
    if replica.backend is None:
        await _read_body(receive)
        return await _send_error(send, 503, "REPLICA_NOT_READY", "Error", "replica is still starting", handler=False)
    body = await _read_body(receive)
    if control:
        return await _serve_config(send, body)
    path_params = _header(scope, PATH_PARAMS_HEADER)
    if path_params:
        scope["path_params"] = json.loads(path_params)
    try:
        result = await _call_handler(scope, receive, body)
        await _send_value(scope, receive, send, result)
    except Exception as error:  # noqa: BLE001 - a handler error is an answer, not a crash
        if isinstance(error, CLIENT_GONE) and _client_gone(send):
            return
        _log("handler_error", type=type(error).__name__, message=str(error), path=path, traceback=traceback.format_exc())
        await _send_error(send, 500, "HANDLER_ERROR", type(error).__name__, str(error))


class _Server(uvicorn.Server):
    """uvicorn's server, reporting 'draining' on SIGTERM before it stops accepting and finishes what is in flight.

    The runtime installs its own signal handlers: newer uvicorns re-raise a caught SIGTERM once they stop, which would
    end the process with the signal instead of status 0.
    """

    def install_signal_handlers(self):
        pass

    @contextlib.contextmanager
    def capture_signals(self):
        yield

    def handle_exit(self, sig, frame):
        if replica.state != "draining":
            replica.state = "draining"
            _log("draining")
        super().handle_exit(sig, frame)


def _listening_socket():
    socket_path = os.environ.get("FLOTILLA_SOCKET")
    if socket_path:
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(socket_path)
        os.chmod(socket_path, 0o666)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", int(os.environ.get("FLOTILLA_PORT") or DEFAULT_PORT)))
    sock.listen(LISTEN_BACKLOG)
    return sock


def _start(entry_file):
    """Loads the backend on a pool thread while the server answers 'starting'; exits 1 with init_failed when it cannot."""
    try:
        with open(entry_file, encoding="utf-8") as file:
            entry = json.load(file)
        secret = entry.get("controlSecret")
        if not isinstance(secret, str) or not secret:
            raise RuntimeError(f"{entry_file} has no controlSecret")
        replica.control_secret = _digest(secret)
        backend = LoadedBackend(entry, replica.runner)
        replica.apply_config(backend, entry)
        replica.runner.loop.call_soon_threadsafe(_become_ready, backend, entry)
    except BaseException as error:  # noqa: BLE001 - any failure to start is reported the same way
        message = str(error) or type(error).__name__
        if not isinstance(error, (HandlerError, RuntimeError, AttributeError)):
            message = f"{type(error).__name__}: {message}"
        _log("init_failed", message=message)
        os._exit(1)


def _become_ready(backend, entry):
    """On the loop, after the batchers that apply_config set up: requests reach the backend from here on."""
    replica.backend = backend
    if replica.state == "starting":
        replica.state = "ready"
    _log("ready", module=entry.get("module"), export=entry.get("exportName"))


async def _serve():
    loop = asyncio.get_running_loop()
    replica.runner = Runner(loop)
    sock = _listening_socket()
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=KEEP_ALIVE_S,
        backlog=LISTEN_BACKLOG,
    )
    server = _Server(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.handle_exit, sig, None)
    entry_file = os.environ.get("FLOTILLA_ENTRY_FILE") or DEFAULT_ENTRY_FILE
    loop.run_in_executor(replica.runner.pool, _start, entry_file)
    await server.serve(sockets=[sock])


def main():
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_logger.addHandler(_JsonLogHandler())
    uvicorn_logger.setLevel(logging.WARNING)
    uvicorn_logger.propagate = False
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve())
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    # Run as the module 'flotilla_replica', so that user code importing it shares its names (accept_batch).
    sys.modules.pop("flotilla_replica", None)
    import flotilla_replica

    flotilla_replica.main()
