"""The client of one control plane: Ray Serve 1.x's Client, each method one admin API call."""

import time
import urllib.parse

from ._shipping import definition_of, init_args_of, replica_options_of
from .config import BackendConfig, config_patch
from .errors import FlotillaError
from .handle import ServeHandle

SHUTDOWN_WAIT_S = 120


def _quoted(name):
    if not isinstance(name, str):
        raise FlotillaError("INVALID_ARGUMENT", f"a name is a string, not {type(name).__name__}", 400)
    return urllib.parse.quote(name, safe="")


class Client:
    """What serve.start() and serve.connect() return; the module functions of `flotilla.serve` call the current one."""

    def __init__(self, admin, health):
        self._admin = admin
        self.http_url = health["httpUrl"]
        self.instance = health["instance"]
        self.address = admin.base

    def create_backend(self, backend_tag, func_or_class, *actor_init_args, ray_actor_options=None, config=None):
        definition = definition_of(func_or_class)
        options = {
            "initArgs": init_args_of(actor_init_args),
            "config": config_patch(config),
            "replicaOptions": replica_options_of(ray_actor_options),
        }
        self._admin.call("POST", "/api/backends", {"name": backend_tag, "definition": definition, "options": options})

    def list_backends(self):
        return {name: BackendConfig._from_api(info) for name, info in self._admin.call("GET", "/api/backends").items()}

    def get_backend_config(self, backend_tag):
        return BackendConfig._from_api(self._admin.call("GET", f"/api/backends/{_quoted(backend_tag)}"))

    def update_backend_config(self, backend_tag, config_options):
        self._admin.call("PATCH", f"/api/backends/{_quoted(backend_tag)}/config", config_patch(config_options))

    def delete_backend(self, backend_tag, force=False):
        self._admin.call("DELETE", f"/api/backends/{_quoted(backend_tag)}{'?force=true' if force else ''}")

    def list_replicas(self, backend_tag):
        """Flotilla's own: each replica's state, restarts, last error and placement."""
        return self._admin.call("GET", f"/api/backends/{_quoted(backend_tag)}/replicas")

    def create_endpoint(self, endpoint_name, *, backend=None, route=None, methods=("GET",), allow_call_method=False):
        if backend is None:
            raise FlotillaError("INVALID_ARGUMENT", f"create_endpoint('{endpoint_name}') needs backend=, the backend to serve it", 400)
        body = {"name": endpoint_name, "backend": backend, "methods": [str(m).upper() for m in methods]}
        if route is not None:
            body["route"] = route
        if allow_call_method:
            body["allowCallMethod"] = True
        self._admin.call("POST", "/api/endpoints", body)

    def list_endpoints(self):
        return {
            name: {"route": info.get("route"), "methods": info.get("methods"), "traffic": info.get("traffic"), "shadows": info.get("shadows", {})}
            for name, info in self._admin.call("GET", "/api/endpoints").items()
        }

    def delete_endpoint(self, endpoint):
        self._admin.call("DELETE", f"/api/endpoints/{_quoted(endpoint)}")

    def set_traffic(self, endpoint_name, traffic_policy_dictionary):
        self._admin.call("PUT", f"/api/endpoints/{_quoted(endpoint_name)}/traffic", {"weights": traffic_policy_dictionary})

    def shadow_traffic(self, endpoint_name, backend_tag, proportion):
        path = f"/api/endpoints/{_quoted(endpoint_name)}/shadows/{_quoted(backend_tag)}"
        self._admin.call("PUT", path, {"proportion": proportion})

    def get_handle(self, endpoint_name, missing_ok=False, sync=True):
        """A handle; unless missing_ok, an unknown endpoint raises ENDPOINT_NOT_FOUND here. `sync` is accepted for
        Ray's signature: every handle's remote() is both awaitable and has .result()."""
        if not missing_ok and endpoint_name not in self._admin.call("GET", "/api/endpoints"):
            raise FlotillaError("ENDPOINT_NOT_FOUND", f"endpoint '{endpoint_name}' does not exist", 404)
        return ServeHandle(self._admin, endpoint_name)

    def shutdown(self):
        """Drains and removes every endpoint, backend and replica, stops the control plane, and waits until it is gone."""
        self._admin.call("POST", "/api/shutdown")
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        while time.monotonic() < deadline:
            try:
                self._admin.health()
            except FlotillaError as error:
                if error.code == "ADMIN_UNREACHABLE":
                    return
            time.sleep(0.2)
        raise FlotillaError("INTERNAL_ERROR", f"the control plane at {self.address} still answers {SHUTDOWN_WAIT_S} s after shutdown", 500)

    def __repr__(self):
        return f"Client(instance='{self.instance}', address='{self.address}', http_url='{self.http_url}')"
