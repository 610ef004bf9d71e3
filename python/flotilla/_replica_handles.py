"""Handle calls from inside a replica (composition): serve.get_handle(name) in code a replica runs goes to the control
plane's handle socket next to the replica's entry file, with the replica's own handleToken (docs/protocol.md)."""

import http.client
import json
import os
import socket
import time
from urllib.parse import unquote

from .errors import FlotillaError, error_from_answer

ENTRY_FILE_ENV = "FLOTILLA_ENTRY_FILE"
SOCKET_NAME = "handle.sock"
CALL_PATH = "/call"
TOKEN_HEADER = "x-flotilla-handle-token"
SOCKET_WAIT_S = 5.0
_CALL_PREFIX = "/api/endpoints/"


def _entry():
    path = os.environ.get(ENTRY_FILE_ENV)
    if not path:
        return None, None
    try:
        with open(path, encoding="utf-8") as file:
            return path, json.load(file)
    except (OSError, ValueError):
        return path, None


def in_replica():
    """Whether this process is a Flotilla replica (its runtime was given an entry file)."""
    return bool(os.environ.get(ENTRY_FILE_ENV))


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("handle-socket", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class ReplicaGateway:
    """Stands in for the admin API under a ServeHandle inside a replica: the handle socket, never the admin token."""

    def __init__(self):
        entry_file, entry = _entry()
        token = (entry or {}).get("handleToken")
        if not token:
            raise FlotillaError(
                "FORBIDDEN", f"this replica was given no handleToken in {entry_file}, so it cannot call other endpoints", 403
            )
        self._token = token
        self._socket = os.path.join(os.path.dirname(entry_file), SOCKET_NAME)

    def call(self, method, path, body=None, timeout=None):
        if method != "POST" or not path.startswith(_CALL_PREFIX) or not path.endswith("/call"):
            raise FlotillaError("INVALID_ARGUMENT", f"inside a replica only handle calls reach the control plane, not {method} {path}", 400)
        call = {"endpoint": unquote(path[len(_CALL_PREFIX) : -len("/call")]), **(body or {})}
        status, text = self._post(json.dumps(call).encode("utf-8"), timeout)
        try:
            answer = json.loads(text)
        except ValueError:
            raise FlotillaError("INTERNAL_ERROR", f"the handle socket answered {status} with something that is not JSON", 500) from None
        if status == 200 and "output" in answer:
            return answer["output"]
        error = answer.get("error") or {}
        raise error_from_answer(error.get("code", "INTERNAL_ERROR"), error.get("message", f"answered {status}"), status, error.get("details"))

    def _post(self, data, timeout):
        deadline = time.monotonic() + SOCKET_WAIT_S
        while True:
            connection = _UnixConnection(self._socket, timeout)
            try:
                connection.request("POST", CALL_PATH, body=data, headers={"content-type": "application/json", TOKEN_HEADER: self._token})
                response = connection.getresponse()
                return response.status, response.read().decode("utf-8", "replace")
            except (FileNotFoundError, ConnectionRefusedError) as error:
                if time.monotonic() > deadline:
                    raise FlotillaError("REPLICA_UNREACHABLE", f"the handle socket {self._socket} cannot be reached: {error}", 503) from None
                time.sleep(0.1)
            finally:
                connection.close()
