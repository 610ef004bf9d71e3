"""Bad input: each gives a Python exception carrying Flotilla's code, and nothing already running changes."""

import os
import subprocess
import sys
import threading

import pytest
import requests

import flotilla
from conftest import REPO_FIXTURES
from flotilla import serve


def code_of(call):
    with pytest.raises(flotilla.FlotillaError) as raised:
        call()
    return raised.value


def echo(request):
    return "still here"


@pytest.fixture(scope="module")
def running(flotilla_client):
    serve.create_backend("echo", echo, ray_actor_options={"num_cpus": 0.1})
    serve.create_endpoint("echo", backend="echo", route="/echo")
    return flotilla_client


def containers(client):
    return sorted(r["containerId"] for r in client.list_replicas("echo"))


def test_an_unpicklable_closure_is_refused_and_nothing_changes(running):
    before, backends = containers(running), set(serve.list_backends())
    lock = threading.Lock()

    def guarded(request):
        with lock:
            return "guarded"

    error = code_of(lambda: serve.create_backend("guarded", guarded))
    assert error.code == "UNSHIPPABLE_DEFINITION"
    assert "function test_an_unpicklable_closure_is_refused_and_nothing_changes.<locals>.guarded cannot be shipped" in error.message
    assert "cannot pickle '_thread.lock' object" in error.message
    assert set(serve.list_backends()) == backends and containers(running) == before


def test_a_lambda_is_shipped_by_value(running):
    serve.create_backend("lambda", lambda request: "from a lambda", ray_actor_options={"num_cpus": 0.1})
    serve.create_endpoint("lambda", backend="lambda")
    assert serve.get_handle("lambda").remote().result() == "from a lambda"


def test_refused_names_and_routes(running, url):
    assert code_of(lambda: serve.create_backend("bad name!", echo)).code == "INVALID_ARGUMENT"
    assert code_of(lambda: serve.create_backend("echo", echo)).code == "BACKEND_EXISTS"
    assert code_of(lambda: serve.create_endpoint("other", backend="echo", route="no-slash")).code == "INVALID_ARGUMENT"
    assert code_of(lambda: serve.create_endpoint("other", backend="echo", route="/echo")).code == "ROUTE_TAKEN"
    assert code_of(lambda: serve.create_endpoint("other", backend="missing", route="/other")).code == "BACKEND_NOT_FOUND"
    assert code_of(lambda: serve.create_endpoint("other", route="/other")).code == "INVALID_ARGUMENT"
    assert code_of(lambda: serve.delete_backend("echo")).code == "BACKEND_IN_USE"
    assert code_of(lambda: serve.get_handle("missing")).code == "ENDPOINT_NOT_FOUND"
    assert code_of(lambda: serve.get_handle("missing", missing_ok=True).remote().result()).code == "ENDPOINT_NOT_FOUND"
    assert requests.get(url("/echo")).text == "still here"


def failing(request):
    raise ValueError("the model is not loaded")


def test_a_handler_that_raises(running, url):
    serve.create_backend("failing", failing, ray_actor_options={"num_cpus": 0.1})
    serve.create_endpoint("failing", backend="failing", route="/failing")
    ref = serve.get_handle("failing").remote("input")
    with pytest.raises(ValueError) as raised:
        ref.result()
    assert isinstance(raised.value, flotilla.HandlerError)
    assert raised.value.code == "HANDLER_ERROR"
    assert raised.value.error_type == "ValueError"
    assert raised.value.message == "the model is not loaded"
    with pytest.raises(ValueError):
        flotilla.get(serve.get_handle("failing").remote())
    answer = requests.get(url("/failing"))
    assert answer.status_code == 500
    assert answer.json()["error"] == {"code": "HANDLER_ERROR", "type": "ValueError", "message": "the model is not loaded"}


def test_unknown_actor_options_and_config(running):
    before = containers(running)
    error = code_of(lambda: serve.create_backend("x", echo, ray_actor_options={"resources": {"TPU": 1}}))
    assert error.code == "INVALID_ARGUMENT" and "unknown keys 'resources'" in error.message and "num_cpus" in error.message
    error = code_of(lambda: serve.create_backend("x", echo, config={"num_replica": 2}))
    assert error.code == "INVALID_ARGUMENT" and "no field 'num_replica'" in error.message
    error = code_of(lambda: serve.create_backend("x", echo, ray_actor_options={"num_gpus": 1.5}))
    assert error.code == "INVALID_ARGUMENT" and "numGpus" in error.message
    error = code_of(lambda: serve.create_backend("x", echo, config={"user_config": {"a": 1}}))
    assert error.code == "INVALID_ARGUMENT" and "reconfigure" in error.message
    error = code_of(lambda: serve.create_backend("x", echo, config={"max_batch_size": 4}))
    assert error.code == "INVALID_ARGUMENT" and "@serve.accept_batch" in error.message
    error = code_of(lambda: serve.create_backend("x", echo, object()))
    assert error.code == "INVALID_ARGUMENT" and "init_args must be JSON values" in error.message
    assert "x" not in serve.list_backends() and containers(running) == before


def test_runtime_envs_that_cannot_be_built(running):
    before = containers(running)
    error = code_of(lambda: serve.create_backend("x", echo, ray_actor_options={"runtime_env": {"conda": "ray-tf1"}}))
    assert error.code == "INVALID_ARGUMENT"
    assert "image of its own" in error.message and "dockerfile" in error.message and "docs/environments.md" in error.message
    error = code_of(lambda: serve.create_backend("x", echo, ray_actor_options={"runtime_env": {"apt": ["no-such-package-of-flotilla"]}}))
    assert error.code == "BUILD_FAILED" and "no-such-package-of-flotilla" in error.message
    error = code_of(lambda: serve.create_backend("x", echo, ray_actor_options={"runtime_env": {"working_dir": "/no/such/dir"}}))
    assert error.code == "INVALID_ARGUMENT" and "/no/such/dir" in error.message
    assert "x" not in serve.list_backends() and containers(running) == before


def test_a_replica_python_other_than_the_callers_is_refused(running):
    offline = subprocess.run(["docker", "image", "inspect", "flotilla-local/trixie-minbase:latest"], capture_output=True)
    trixie = "flotilla-local/trixie-minbase:latest" if offline.returncode == 0 else "debian:trixie-slim"
    runtime_env = {
        "working_dir": os.path.join(REPO_FIXTURES, "env-python-trixie"),
        "dockerfile": "Dockerfile",
        "build_args": {"TRIXIE_IMAGE": trixie},
    }
    error = code_of(lambda: serve.create_backend("x", echo, ray_actor_options={"runtime_env": runtime_env}))
    mine = "%d.%d" % sys.version_info[:2]
    assert error.code == "INVALID_ARGUMENT", error.message
    assert f"from Python {mine}, but its replica image has Python 3.13" in error.message
    assert "FLOTILLA_PYTHON_BASE_IMAGE" in error.message and "dockerfile" in error.message
    # The same image serves code by import path.
    serve.create_backend("numpy2", "model.py:versions", ray_actor_options={"runtime_env": runtime_env, "num_cpus": 0.1})
    serve.create_endpoint("numpy2", backend="numpy2")
    assert serve.get_handle("numpy2").remote().result()["numpy"].startswith("2.")


def test_the_cli_reports_a_start_that_fails():
    error = code_of(lambda: serve.start(detached=True, options={"instance": "Not A Name", "admin": {"port": 1}}))
    assert error.code == "INVALID_ARGUMENT" and "instance" in error.message
