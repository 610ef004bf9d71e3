"""Each test module that needs one gets a control plane of its own, started as a user starts one: serve.start()."""

import os
import socket
import subprocess
import sys
import tempfile
import uuid

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from flotilla import serve  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
REPO_FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "test", "fixtures")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remove_containers(instance):
    ids = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label=dev.flotilla.instance={instance}"], capture_output=True, text=True
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def start_control_plane(**settings):
    """serve.start() with an instance, a state dir and ports of this test's own (as the TypeScript tests' harness does)."""
    instance = f"test-py{uuid.uuid4().hex[:6]}"
    options = {
        "instance": instance,
        "stateDir": tempfile.mkdtemp(prefix="flt-py-"),
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "logLevel": "warn",
        "cpuCapacity": 64,
        **settings,
    }
    http_options = {"host": "127.0.0.1", "port": free_port()}
    client = serve.start(detached=True, http_options=http_options, options=options)
    client.start_arguments = {"http_options": http_options, "options": options}
    return client, instance


@pytest.fixture(scope="module")
def flotilla_client():
    client, instance = start_control_plane()
    try:
        yield client
    finally:
        try:
            serve.connect(address=client.address, instance=instance, state_dir=client._admin.settings.state_dir)
            serve.shutdown()
        finally:
            remove_containers(instance)


@pytest.fixture
def url(flotilla_client):
    return lambda route: flotilla_client.http_url + route
