"""Ray Serve 1.x's API on Flotilla: `from flotilla import serve` where Ray's users wrote `from ray import serve`.

The module functions act on the control plane that serve.start() started or serve.connect() reached; with neither,
the first call connects to the one the environment names (FLOTILLA_ADMIN_HOST/PORT, as the `flotilla` command does).
"""

import atexit
import json
import os
import shutil
import subprocess
import threading

from . import _replica_handles
from ._admin import AdminAPI, Settings
from .client import Client
from .config import BackendConfig
from .errors import FlotillaError
from .handle import ServeHandle

__all__ = [
    "BackendConfig",
    "accept_batch",
    "connect",
    "create_backend",
    "create_endpoint",
    "delete_backend",
    "delete_endpoint",
    "get_backend_config",
    "get_handle",
    "list_backends",
    "list_endpoints",
    "set_traffic",
    "shadow_traffic",
    "shutdown",
    "start",
    "update_backend_config",
]

_HTTP_OPTIONS = ("host", "port", "location")
_client = None
_lock = threading.Lock()


def accept_batch(target):
    """Marks a function, a class or a method (`__call__`) as taking a list of requests and returning a list of results
    (config max_batch_size). Sets `_serve_accept_batch` (Ray 1.x's mark) and `accepts_batch` (the Python replica
    runtime's), which travel with the pickled code."""
    target._serve_accept_batch = True
    target.accepts_batch = True
    return target


def _checkouts():
    """The checkout this package sits in (PYTHONPATH=<checkout>/python), then the one pip installed it from."""
    yield os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    try:
        from ._checkout import CHECKOUT
    except ImportError:
        return
    yield CHECKOUT


def _cli():
    """How to run the `flotilla` command of this checkout: FLOTILLA_CLI, the package's checkout, or PATH."""
    node = shutil.which("node")
    given = os.environ.get("FLOTILLA_CLI")
    if given:
        return [node, given] if given.endswith(".js") and node else [given]
    for checkout in _checkouts():
        main = os.path.join(checkout, "dist", "src", "cli", "main.js")
        if os.path.isfile(main) and node:
            return [node, os.path.realpath(main)]
    installed = shutil.which("flotilla")
    if installed:
        return [installed]
    raise FlotillaError(
        "INVALID_ARGUMENT",
        "serve.start() runs the `flotilla` command, and found none: build the checkout (npm ci && npm run build) and use "
        "the package from it (PYTHONPATH=<checkout>/python), put `flotilla` on PATH, or set FLOTILLA_CLI to "
        "<checkout>/dist/src/cli/main.js",
        400,
    )


def _open(settings):
    admin = AdminAPI(settings)
    return Client(admin, admin.health())


def _use(client):
    global _client
    with _lock:
        _client = client
    return client


def _current():
    with _lock:
        client = _client
    return client if client is not None else _use(_open(Settings()))


def connect(address=None, token=None, instance=None, state_dir=None):
    """Reaches a running control plane's admin API (default: as the `flotilla` command finds it) and makes it current."""
    return _use(_open(Settings(address=address, token=token, instance=instance, state_dir=state_dir)))


def _start_options(http_options, options):
    settings = dict(options or {})
    if http_options:
        unknown = [key for key in http_options if key not in _HTTP_OPTIONS]
        if unknown:
            raise FlotillaError(
                "INVALID_ARGUMENT",
                f"http_options has unknown keys {', '.join(map(repr, unknown))}; Flotilla takes host and port "
                "(its front door is not Starlette: middlewares do not apply)",
                400,
            )
        if http_options.get("location") not in (None, "HeadOnly"):
            raise FlotillaError("INVALID_ARGUMENT", "http_options['location'] can only be 'HeadOnly': one front door per control plane", 400)
        http = dict(settings.get("http") or {})
        http.update({key: http_options[key] for key in ("host", "port") if key in http_options})
        settings["http"] = http
    return settings


def start(detached=False, http_options=None, options=None):
    """Starts a control plane in the background through the `flotilla` command (`flotilla start --detached`) and makes
    it current; if one already answers where it would listen, connects to it instead, as Ray did.

    detached=False shuts it down when this Python process exits; detached=True leaves it running (stop it with
    serve.shutdown() or `flotilla shutdown`). http_options: {'host', 'port'} of the front door (default
    127.0.0.1:8000). options: any of Flotilla's settings as `flotilla start --options` takes them (docs/configuration.md),
    e.g. {'instance': 'x', 'admin': {'port': 8101}, 'stateDir': '/tmp/s'}; FLOTILLA_* variables apply too.
    """
    settings = _start_options(http_options, options)
    admin = settings.get("admin") or {}
    where = Settings(
        instance=settings.get("instance"),
        state_dir=settings.get("stateDir"),
        admin_host=admin.get("host"),
        admin_port=admin.get("port"),
        token=admin.get("token"),
    )
    try:
        client = _open(where)
        if client.instance == where.instance:
            return _use(client)
    except FlotillaError as error:
        if error.code != "ADMIN_UNREACHABLE":
            raise
    command = _cli() + ["start", "--detached", "--options", json.dumps(settings)]
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        line = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        code, _, message = line.removeprefix("flotilla: ").partition(": ")
        if code.isupper() and message:
            raise FlotillaError(code, message)
        raise FlotillaError("ADMIN_UNREACHABLE", f"`flotilla start --detached` failed: {line}", 503)
    client = _use(_open(where))
    if not detached:
        atexit.register(_shutdown_at_exit, client)
    return client


def _shutdown_at_exit(client):
    try:
        client.shutdown()
    except FlotillaError:
        pass


def shutdown():
    """Shuts the current control plane down: drains and removes every replica, and waits until it has stopped."""
    global _client
    with _lock:
        client, _client = _client, None
    if client is None:
        try:
            client = _open(Settings())
        except FlotillaError as error:
            if error.code == "ADMIN_UNREACHABLE":
                return
            raise
    client.shutdown()


def create_backend(backend_tag, func_or_class, *actor_init_args, ray_actor_options=None, config=None):
    """A backend: a function or class of this process (pickled by value, as Ray does), or an import path in its image
    ('model.py:Model', 'package.module.Model'); each replica is a container of the backend's own image."""
    _current().create_backend(backend_tag, func_or_class, *actor_init_args, ray_actor_options=ray_actor_options, config=config)


def list_backends():
    return _current().list_backends()


def get_backend_config(backend_tag):
    return _current().get_backend_config(backend_tag)


def update_backend_config(backend_tag, config_options):
    _current().update_backend_config(backend_tag, config_options)


def delete_backend(backend_tag, force=False):
    _current().delete_backend(backend_tag, force)


def create_endpoint(endpoint_name, *, backend=None, route=None, methods=("GET",), allow_call_method=False):
    """allow_call_method: HTTP callers may choose a class method with X-SERVE-CALL-METHOD (off by default)."""
    _current().create_endpoint(endpoint_name, backend=backend, route=route, methods=methods, allow_call_method=allow_call_method)


def list_endpoints():
    return _current().list_endpoints()


def delete_endpoint(endpoint):
    _current().delete_endpoint(endpoint)


def set_traffic(endpoint_name, traffic_policy_dictionary):
    _current().set_traffic(endpoint_name, traffic_policy_dictionary)


def shadow_traffic(endpoint_name, backend_tag, proportion):
    _current().shadow_traffic(endpoint_name, backend_tag, proportion)


def get_handle(endpoint_name, missing_ok=False, sync=True):
    """In a replica's code, the handle calls go through the replica's handle socket (composition, docs/python.md)."""
    if _replica_handles.in_replica():
        return ServeHandle(_replica_handles.ReplicaGateway(), endpoint_name)
    return _current().get_handle(endpoint_name, missing_ok=missing_ok, sync=sync)
