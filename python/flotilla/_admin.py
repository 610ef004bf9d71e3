"""The admin API over HTTP (docs/admin-api.md): where it is, its token, one call per method."""

import ipaddress
import json
import os
import urllib.error
import urllib.parse
import urllib.request

from .errors import FlotillaError, error_from_answer

HEALTH_TIMEOUT_S = 5
# Calls to the control plane on this machine never go through an HTTP proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _env(name, default):
    value = os.environ.get(name, "")
    return value if value != "" else default


class Settings:
    """What the `flotilla` command reads too: FLOTILLA_INSTANCE, FLOTILLA_STATE_DIR, FLOTILLA_ADMIN_HOST/PORT/TOKEN."""

    def __init__(self, address=None, token=None, instance=None, state_dir=None, admin_host=None, admin_port=None):
        self.instance = instance or _env("FLOTILLA_INSTANCE", "default")
        self.state_dir = state_dir or _env("FLOTILLA_STATE_DIR", os.path.join(os.path.expanduser("~"), ".flotilla"))
        if address is None:
            host = admin_host or _env("FLOTILLA_ADMIN_HOST", "127.0.0.1")
            if host in ("0.0.0.0", "::"):
                host = "127.0.0.1"
            port = admin_port or int(_env("FLOTILLA_ADMIN_PORT", "8001"))
            address = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self.address = address.rstrip("/")
        self.explicit_token = token or _env("FLOTILLA_ADMIN_TOKEN", None)

    @property
    def token_file(self):
        return os.path.join(self.state_dir, "admin", f"{self.instance}.token")

    def is_local(self):
        host = urllib.parse.urlsplit(self.address).hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def token(self):
        """The given token, else (for an address on this machine) the one the instance stored in its state dir."""
        if self.explicit_token is not None:
            return self.explicit_token
        if not self.is_local():
            return None
        try:
            with open(self.token_file, encoding="utf-8") as file:
                return file.read().strip() or None
        except OSError:
            return None


class AdminAPI:
    """One method per call: JSON in, JSON out, errors raised as FlotillaError with the server's code."""

    def __init__(self, settings):
        self.settings = settings
        self.base = settings.address
        self._token = settings.token()

    def call(self, method, path, body=None, timeout=None):
        headers = {"accept": "application/json"}
        if self._token is not None:
            headers["authorization"] = f"Bearer {self._token}"
        data = None
        if method in ("POST", "PUT", "PATCH"):
            headers["content-type"] = "application/json"
            data = json.dumps({} if body is None else body, allow_nan=False).encode("utf-8")
        request = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        try:
            with _opener.open(request, timeout=timeout) as response:
                text = response.read().decode("utf-8")
        except urllib.error.HTTPError as error:
            raise self._answered(error.code, error.read().decode("utf-8", "replace")) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise FlotillaError(
                "ADMIN_UNREACHABLE", f"no Flotilla admin API answers at {self.base} ({reason}); is it running? Start one with serve.start()", 503
            ) from None
        try:
            return json.loads(text) if text else {}
        except ValueError:
            raise FlotillaError("ADMIN_UNREACHABLE", f"{self.base} answered {method} {path} with something that is not JSON", 503) from None

    def _answered(self, status, text):
        try:
            error = json.loads(text)["error"]
            code, message = error["code"], error["message"]
        except (ValueError, KeyError, TypeError):
            return FlotillaError("ADMIN_UNREACHABLE", f"{self.base} answered {status} without a Flotilla error; is a Flotilla admin API there?", 503)
        if code == "UNAUTHORIZED" and self.settings.explicit_token is None and self.settings.is_local():
            message += (
                f" (looked for a generated token in {self.settings.token_file}: pass the instance and state_dir the control plane "
                "runs with, or its token)"
            )
        return error_from_answer(code, message, status, error.get("details"))

    def health(self):
        return self.call("GET", "/api/health", timeout=HEALTH_TIMEOUT_S)
