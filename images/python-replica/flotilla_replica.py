"""Flotilla's Python replica runtime: the replica protocol (docs/protocol.md), standard library only.

Runs inside each Python replica container. It answers health checks at once
('starting'), loads the entry's module, constructs the class (with initArgs) and
applies the entry's live config (reconfigure, batching), then serves ('ready').
If any of that fails it prints one JSON line (event init_failed) on stderr and
exits 1. PUT /-/flotilla/config changes live config without a restart, for a
caller that presents the entry's control secret (403 otherwise). On
SIGTERM it reports 'draining', stops accepting connections, finishes the
requests in flight and exits 0. Each connection has its own thread, so health
checks are answered while handlers run.

User code may import helpers from this module:

    from flotilla_replica import Response, StreamingResponse, accept_batch, sse

A generator or async generator handler (or a StreamingResponse) streams its
chunks as they are produced, chunked: str and bytes as they are, other values
as one JSON line each. A client that leaves closes the generator
(GeneratorExit) at the next chunk.
"""

import concurrent.futures
import hashlib
import hmac
import importlib.util
import inspect
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

HEALTH_PATH = "/-/flotilla/health"
CONFIG_PATH = "/-/flotilla/config"
METHOD_HEADER = "x-flotilla-method"
ERROR_HEADER = "x-flotilla-error"
CONTROL_SECRET_HEADER = "x-flotilla-control-secret"
DEFAULT_ENTRY_FILE = "/run/flotilla/entry.json"
DEFAULT_PORT = 8000

SSE_KEEP_ALIVE_S = 15
BATCH_STREAM = (
    "a batch handler cannot stream: batching (maxBatchSize > 1) and streaming results (generators) "
    "do not combine; set maxBatchSize 1 or return whole values"
)

__all__ = ["Request", "Response", "StreamingResponse", "accept_batch", "sse"]


def accept_batch(target):
    """Marks a function or class as taking a list of requests and returning a list of results."""
    target.accepts_batch = True
    return target


class Request:
    """One HTTP request: method, url, path, headers (case-insensitive), query (first value of each key) and body bytes."""

    def __init__(self, method, url, path, headers, body):
        self.method = method
        self.url = url
        self.path = path
        self.headers = headers
        self.body = body
        split = urlsplit(path)
        self.query = {key: values[0] for key, values in parse_qs(split.query, keep_blank_values=True).items()}

    def text(self):
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body.decode("utf-8")) if self.body else None

    def __repr__(self):
        return f"Request({self.method} {self.path})"


class Arguments:
    """A handle's arguments call (x-flotilla-call: args): the method gets these instead of a request."""

    def __init__(self, body):
        call = json.loads(body.decode("utf-8") or "{}")
        self.args, self.kwargs = call.get("args", []), call.get("kwargs", {})


class Response:
    """A response as is: status, headers and a body (str, bytes, or a JSON-serializable value)."""

    def __init__(self, body=b"", status=200, headers=None):
        self.body = body
        self.status = status
        self.headers = dict(headers or {})


class StreamingResponse:
    """A streamed response: chunks from a generator, async generator or other iterable, sent as they come."""

    def __init__(self, chunks, status=200, headers=None, content_type=None):
        self.chunks = chunks
        self.status = status
        self.headers = dict(headers or {})
        self.content_type = content_type


def _sse_frame(value):
    text = value if isinstance(value, str) else _to_json(value).decode("utf-8")
    return "".join(f"data: {line}\n" for line in text.splitlines() or [""]) + "\n"


def sse(events):
    """Answers with each value of `events` as a server-sent event (text/event-stream): strings as they are, others as JSON.

    An async iterable also gets a keep-alive comment every SSE_KEEP_ALIVE_S seconds of silence.
    """
    if hasattr(events, "__aiter__"):

        async def framed():
            import asyncio

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
    return StreamingResponse(chunks, headers=headers, content_type="text/event-stream; charset=utf-8")


def _is_stream(value):
    return isinstance(value, StreamingResponse) or inspect.isgenerator(value) or inspect.isasyncgen(value)


def _encode_chunk(value):
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return _to_json(value) + b"\n"


def _stream_content_type(first):
    if isinstance(first, str):
        return "text/plain; charset=utf-8"
    return "application/octet-stream" if isinstance(first, (bytes, bytearray, memoryview)) else "application/x-ndjson"


class _Chunks:
    """Steps a sync or async iterable from a handler thread; close() ends it (GeneratorExit in a generator)."""

    def __init__(self, source):
        self._async = hasattr(source, "__aiter__")
        self._iterator = source.__aiter__() if self._async else iter(source)

    def next(self):
        """The next chunk, or raises StopIteration at the end."""
        if not self._async:
            return next(self._iterator)
        try:
            return _async.run(self._iterator.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self):
        closer = getattr(self._iterator, "aclose" if self._async else "close", None)
        if closer is not None:
            _resolve(closer())


class HandlerError(Exception):
    def __init__(self, code, message, error_type="Error"):
        super().__init__(message)
        self.code = code
        self.error_type = error_type


def _log(event, **fields):
    sys.stderr.write(json.dumps({"component": "replica", "event": event, **fields}) + "\n")
    sys.stderr.flush()


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _to_json(value):
    return json.dumps(value, default=_json_default, allow_nan=False, separators=(",", ":")).encode("utf-8")


def _accepts_batch(target):
    return getattr(target, "accepts_batch", False) is True or getattr(target, "acceptsBatch", False) is True


class _AsyncRunner:
    """Runs coroutines returned by async handlers on one event loop thread."""

    def __init__(self):
        self._loop = None
        self._asyncio = None
        self._lock = threading.Lock()

    def run(self, coroutine):
        with self._lock:
            if self._loop is None:
                import asyncio

                self._asyncio = asyncio
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="flotilla-asyncio", daemon=True).start()
        return self._asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


_async = _AsyncRunner()


def _resolve(value):
    return _async.run(value) if inspect.isawaitable(value) else value


def _unpickle(path):
    """A function or class the Python client shipped by value (docs/protocol.md): cloudpickle's bytes."""
    import pickle

    with open(path, "rb") as file:
        return pickle.load(file)


def _import_export(module_path, export_name):
    module_name = os.path.splitext(os.path.basename(module_path))[0]
    spec = importlib.util.spec_from_file_location(module_name, module_path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"{module_path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    exported = getattr(module, export_name, None)
    if not callable(exported):
        found = ", ".join(name for name, value in vars(module).items() if callable(value) and not name.startswith("_"))
        raise RuntimeError(
            f"{module_path} has no function or class '{export_name}' (found: {found or 'none'}); "
            "name one with 'file.py:Name'"
        )
    return exported


class LoadedBackend:
    """The user's code, loaded: call, call_batch, reconfigure (when it has one)."""

    def __init__(self, entry):
        module_path = entry["module"]
        export_name = entry.get("exportName") or "default"
        if not os.path.isfile(module_path):
            raise RuntimeError(f"{module_path} does not exist in the image")
        module_dir = os.path.dirname(module_path)
        for path in ("/app", module_dir):
            if path not in sys.path:
                sys.path.insert(0, path)
        exported = _unpickle(module_path) if module_path.endswith(".pkl") else _import_export(module_path, export_name)
        self.accepts_batch = _accepts_batch(exported)
        if inspect.isclass(exported):
            self.name = exported.__name__
            self.instance = exported(*entry.get("initArgs", []))
            self.function = None
        else:
            self.name = getattr(exported, "__name__", "the backend function")
            self.instance = None
            self.function = exported
        self.has_reconfigure = self.instance is not None and callable(getattr(self.instance, "reconfigure", None))

    def _method(self, name):
        if name == "call":
            found = getattr(self.instance, "call", None)
            if not callable(found) and callable(self.instance):
                found = self.instance
        else:
            found = None if name.startswith("_") else getattr(self.instance, name, None)
        if not callable(found):
            raise AttributeError(f"{self.name} has no method '{name}'")
        return found

    def call(self, request, method_name=None):
        if self.function is not None:
            if method_name not in (None, "call"):
                raise AttributeError(f"function backend {self.name} has no method '{method_name}'; only class backends do")
            target = self.function
        else:
            target = self._method(method_name or "call")
        if isinstance(request, Arguments):
            return _resolve(target(*request.args, **request.kwargs))
        return _resolve(target(request))

    def streams(self):
        """Whether the batch entry point (the function, or the class's call) is a generator function, so it streams."""
        target = self.function if self.function is not None else getattr(self.instance, "call", None)
        return inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target)

    def call_batch(self, requests):
        if self.function is not None:
            return _resolve(self.function(requests))
        return _resolve(self._method("call")(requests))

    def reconfigure(self, user_config):
        _resolve(self.instance.reconfigure(user_config))


class Batcher:
    """Groups single calls into batches: a batch runs as soon as max_batch_size calls
    wait, or batch_wait_timeout_s after the first of them arrived. Each caller gets its
    own element of the result; a result that is not a list of the batch's length fails
    every call of that batch."""

    def __init__(self, run):
        self._run = run
        self._lock = threading.Lock()
        self._queue = []
        self._timer = None
        self.max_batch_size = 1
        self.batch_wait_timeout_s = 0.0

    def configure(self, max_batch_size, batch_wait_timeout_s):
        with self._lock:
            self.max_batch_size = max_batch_size
            self.batch_wait_timeout_s = batch_wait_timeout_s
            if len(self._queue) >= max_batch_size:
                self._flush_locked()

    def submit(self, request):
        future = concurrent.futures.Future()
        with self._lock:
            self._queue.append((request, future))
            if len(self._queue) >= self.max_batch_size:
                self._flush_locked()
            elif self._timer is None:
                self._timer = threading.Timer(self.batch_wait_timeout_s, self._flush)
                self._timer.daemon = True
                self._timer.start()
        return future.result()

    def _flush(self):
        with self._lock:
            self._flush_locked()

    def _flush_locked(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch_size], self._queue[self.max_batch_size :]
            threading.Thread(target=self._run_batch, args=(batch,), daemon=True).start()
            if len(self._queue) < self.max_batch_size:
                break
        if self._queue:
            self._timer = threading.Timer(self.batch_wait_timeout_s, self._flush)
            self._timer.daemon = True
            self._timer.start()

    def _run_batch(self, batch):
        try:
            results = self._run([request for request, _ in batch])
            if not isinstance(results, (list, tuple)) or len(results) != len(batch):
                got = f"{len(results)} results" if isinstance(results, (list, tuple)) else f"a {type(results).__name__}"
                raise ValueError(
                    f"batch handler returned {got} for a batch of {len(batch)} requests; it must return a list of the same length"
                )
            for (_, future), result in zip(batch, results):
                future.set_result(result)
        except BaseException as error:  # noqa: BLE001 - every caller must hear of it
            for _, future in batch:
                future.set_exception(error)


class Replica:
    """The replica's state machine: starting -> ready -> draining."""

    def __init__(self):
        self.state = "starting"
        self.control_secret = None
        self.backend = None
        self.batcher = None
        self.max_batch_size = 1
        self.batch_wait_timeout_s = 0.0
        self.config_lock = threading.Lock()
        self.in_flight = 0
        self.idle = threading.Condition()

    def apply_config(self, backend, config):
        with self.config_lock:
            max_batch_size = config.get("maxBatchSize", self.max_batch_size)
            batch_wait_timeout_s = config.get("batchWaitTimeoutS", self.batch_wait_timeout_s)
            if max_batch_size > 1 and not backend.accepts_batch:
                raise HandlerError(
                    "INVALID_CONFIG",
                    f"maxBatchSize {max_batch_size} needs a handler that accepts batches "
                    f"(accept_batch, or accepts_batch = True); {backend.name} does not",
                )
            if max_batch_size > 1 and backend.streams():
                raise HandlerError("INVALID_CONFIG", f"{BATCH_STREAM} ({backend.name} is a generator function)")
            if "userConfig" in config:
                if not backend.has_reconfigure:
                    raise HandlerError(
                        "INVALID_CONFIG", f"userConfig needs a class with a reconfigure(user_config) method; {backend.name} has none"
                    )
                try:
                    backend.reconfigure(config["userConfig"])
                except Exception as error:  # noqa: BLE001
                    raise HandlerError(
                        "RECONFIGURE_FAILED", f"{backend.name}.reconfigure raised: {error}", type(error).__name__
                    ) from error
            self.max_batch_size = max_batch_size
            self.batch_wait_timeout_s = batch_wait_timeout_s
            if max_batch_size > 1:
                if self.batcher is None:
                    self.batcher = Batcher(backend.call_batch)
                self.batcher.configure(max_batch_size, batch_wait_timeout_s)

    def begin(self):
        with self.idle:
            self.in_flight += 1

    def end(self):
        with self.idle:
            self.in_flight -= 1
            self.idle.notify_all()

    def wait_idle(self):
        with self.idle:
            while self.in_flight > 0:
                self.idle.wait()


replica = Replica()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flotilla-python-replica"

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def do_GET(self):
        self.serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET

    def read_body(self):
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send(self, status, content_type, body, headers=None):
        self.send_response(status)
        if content_type is not None:
            self.send_header("content-type", content_type)
        for name, value in (headers or {}).items():
            if name.lower() != "content-length":
                self.send_header(name, str(value))
        self.send_header("content-length", str(len(body)))
        if replica.state == "draining":
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_error_body(self, code, error_type, message):
        body = _to_json({"error": {"code": code, "type": error_type, "message": message}})
        self.send(500, "application/json", body, {ERROR_HEADER: "handler"})

    def send_stream(self, result):
        """Sends the head with the first chunk, then each chunk as it comes; a failure midway ends with the error trailer."""
        if isinstance(result, StreamingResponse):
            source, status, headers = result.chunks, int(result.status), {str(k).lower(): v for k, v in result.headers.items()}
            content_type = result.content_type or headers.pop("content-type", None)
        else:
            source, status, headers, content_type = result, 200, {}, None
        chunks = _Chunks(source)
        try:
            first = [chunks.next()]
        except StopIteration:
            first = []
        self.send_response(status)
        self.send_header("content-type", content_type or _stream_content_type(first[0] if first else None))
        for name, value in headers.items():
            if name not in ("content-length", "transfer-encoding"):
                self.send_header(name, str(value))
        self.send_header("transfer-encoding", "chunked")
        if replica.state == "draining":
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        trailer = b""
        try:
            pending = first
            while True:
                for value in pending:
                    data = _encode_chunk(value)
                    if data and not self.write_raw(b"%x\r\n%s\r\n" % (len(data), data)):
                        chunks.close()
                        return
                try:
                    pending = [chunks.next()]
                except StopIteration:
                    break
        except Exception as error:  # noqa: BLE001 - a handler failing midway ends its body with the error trailer
            _log("stream_error", message=str(error), traceback=traceback.format_exc(limit=5))
            message = quote(f"{type(error).__name__}: {error}", safe="")
            trailer = f"{ERROR_HEADER}: {message}\r\n".encode("ascii")
        self.write_raw(b"0\r\n" + trailer + b"\r\n")

    def write_raw(self, data):
        """Writes to the client; False (and the connection marked for closing) when it has gone."""
        try:
            self.wfile.write(data)
            return True
        except OSError:
            self.close_connection = True
            return False

    def send_result(self, result):
        if _is_stream(result):
            return self.send_stream(result)
        if isinstance(result, Response):
            headers = {str(k).lower(): v for k, v in result.headers.items()}
            content_type = headers.pop("content-type", None)
            body = result.body
            if isinstance(body, str):
                content_type = content_type or "text/plain; charset=utf-8"
                body = body.encode("utf-8")
            elif body is None:
                body = b""
            elif isinstance(body, (bytes, bytearray, memoryview)):
                body = bytes(body)
            else:
                content_type = content_type or "application/json"
                body = _to_json(body)
            return self.send(int(result.status), content_type, body, headers)
        if isinstance(result, str):
            return self.send(200, "text/plain; charset=utf-8", result.encode("utf-8"))
        if isinstance(result, (bytes, bytearray, memoryview)):
            return self.send(200, "application/octet-stream", bytes(result))
        return self.send(200, "application/json", _to_json(result))

    def serve(self):
        path = self.path
        if path == HEALTH_PATH:
            body = _to_json({"state": replica.state})
            return self.send(200 if replica.state == "ready" else 503, "application/json", body)
        control = path == CONFIG_PATH and self.command == "PUT"
        if control and not _is_control_caller(self.headers.get(CONTROL_SECRET_HEADER)):
            self.read_body()
            message = f"control calls need the replica's secret in {CONTROL_SECRET_HEADER}"
            return self.send(403, "application/json", _to_json({"error": {"code": "FORBIDDEN", "message": message}}))
        backend = replica.backend
        if backend is None:
            self.read_body()
            body = _to_json({"error": {"code": "REPLICA_NOT_READY", "message": "replica is still starting"}})
            return self.send(503, "application/json", body)
        replica.begin()
        try:
            body = self.read_body()
            if control:
                return self.serve_config(body)
            method_name = self.headers.get(METHOD_HEADER)
            host = self.headers.get("host") or "replica"
            request = Request(self.command, f"http://{host}{path}", path, self.headers, body)
            request.path_params = json.loads(self.headers.get("x-flotilla-path-params") or "{}")
            if self.headers.get("x-flotilla-call") == "args":
                request = Arguments(body)
            try:
                batcher = replica.batcher if replica.max_batch_size > 1 and (method_name or "call") == "call" else None
                result = batcher.submit(request) if batcher is not None else backend.call(request, method_name)
                if batcher is not None and _is_stream(result):
                    raise TypeError(BATCH_STREAM)
                self.send_result(result)
            except Exception as error:  # noqa: BLE001 - a handler error is an answer, not a crash
                _log("handler_error", message=str(error), traceback=traceback.format_exc(limit=5))
                self.send_error_body("HANDLER_ERROR", type(error).__name__, str(error))
        finally:
            replica.end()

    def serve_config(self, body):
        try:
            config = json.loads(body.decode("utf-8") or "{}")
            if not isinstance(config, dict):
                raise HandlerError("INVALID_CONFIG", "the config must be a JSON object")
            replica.apply_config(replica.backend, config)
            self.send(200, "application/json", b"{}")
        except HandlerError as error:
            self.send_error_body(error.code, error.error_type, str(error))
        except Exception as error:  # noqa: BLE001
            self.send_error_body("INVALID_CONFIG", type(error).__name__, str(error))


class UnixThreadingHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    block_on_close = False

    def get_request(self):
        request, _ = super().get_request()
        return request, ("unix", 0)


class TcpThreadingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True


def _digest(value):
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


def _is_control_caller(presented):
    """Compares digests in constant time, so that neither the secret's length nor its content leaks."""
    return replica.control_secret is not None and presented is not None and hmac.compare_digest(_digest(presented), replica.control_secret)


def _listen():
    socket_path = os.environ.get("FLOTILLA_SOCKET")
    if socket_path:
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
        server = UnixThreadingHTTPServer(socket_path, Handler)
        os.chmod(socket_path, 0o666)
    else:
        server = TcpThreadingHTTPServer(("0.0.0.0", int(os.environ.get("FLOTILLA_PORT") or DEFAULT_PORT)), Handler)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    threading.Thread(target=server.serve_forever, name="flotilla-server", daemon=True).start()
    return server


def _drain(server):
    _log("draining")
    server.shutdown()
    server.server_close()
    replica.wait_idle()
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(0)


def main():
    server = _listen()
    signal.signal(signal.SIGTERM, lambda *_: _start_drain(server))
    try:
        entry_file = os.environ.get("FLOTILLA_ENTRY_FILE") or DEFAULT_ENTRY_FILE
        with open(entry_file, encoding="utf-8") as file:
            entry = json.load(file)
        secret = entry.get("controlSecret")
        if not isinstance(secret, str) or not secret:
            raise RuntimeError(f"{entry_file} has no controlSecret")
        replica.control_secret = _digest(secret)
        backend = LoadedBackend(entry)
        replica.apply_config(backend, entry)
        replica.backend = backend
        if replica.state == "starting":
            replica.state = "ready"
        _log("ready", module=entry.get("module"), export=entry.get("exportName"))
    except BaseException as error:  # noqa: BLE001 - any failure to start is reported the same way
        message = str(error) or type(error).__name__
        if not isinstance(error, (HandlerError, RuntimeError, AttributeError)):
            message = f"{type(error).__name__}: {message}"
        _log("init_failed", message=message)
        os._exit(1)
    while True:
        time.sleep(3600)


def _start_drain(server):
    if replica.state == "draining":
        return
    replica.state = "draining"
    threading.Thread(target=_drain, args=(server,), name="flotilla-drain", daemon=True).start()


if __name__ == "__main__":
    # Run as the module 'flotilla_replica', so that user code importing it shares its classes (Response).
    sys.modules.pop("flotilla_replica", None)
    import flotilla_replica

    flotilla_replica.main()
