"""The Core API guide Flotilla started from (Ray Serve 1.x), snippet by snippet, with `from flotilla import serve`.

Each snippet runs as the guide wrote it; what changes is only what needed a Ray cluster: the URLs the guide left
empty (the front door's address), and an import path's module reaching the replica's image (runtime_env working_dir).
"""

import asyncio
import os
import random
import subprocess

import numpy as np
import pytest
import requests

import flotilla
from conftest import FIXTURES, REPO_FIXTURES
from flotilla import serve
from flotilla.serve import BackendConfig


def handle_request(starlette_request):
    return "hello world"


class RequestHandler:
    # Take the message to return as an argument to the constructor.
    def __init__(self, msg):
        self.msg = msg

    def __call__(self, starlette_request):
        return self.msg


def test_deploying_a_backend(flotilla_client):
    serve.create_backend("simple_backend", handle_request)
    # Pass in the message that the backend will return as an argument.
    # If we call this backend, it will respond with "hello, world!".
    serve.create_backend("simple_backend_class", RequestHandler, "hello, world!")

    backends = serve.list_backends()
    assert backends["simple_backend"]["num_replicas"] == 1
    assert backends["simple_backend_class"].num_replicas == 1


def test_list_and_delete(flotilla_client):
    assert {"simple_backend", "simple_backend_class"} <= set(serve.list_backends())
    serve.delete_backend("simple_backend")
    assert "simple_backend" not in serve.list_backends()
    assert serve.list_backends()["simple_backend_class"]["num_replicas"] == 1


def test_exposing_a_backend(flotilla_client, url):
    serve.create_backend("simple_backend", handle_request)
    serve.create_endpoint("simple_endpoint", backend="simple_backend", route="/simple", methods=["GET"])
    assert requests.get(url("/simple")).text == "hello world"
    assert requests.post(url("/simple")).status_code == 405

    handle = serve.get_handle("simple_endpoint")
    assert flotilla.get(handle.remote()) == "hello world"
    assert handle.remote().result() == "hello world"
    assert [ref.result() for ref in [handle.remote() for _ in range(4)]] == ["hello world"] * 4

    async def awaited():
        return await asyncio.gather(*(handle.remote() for _ in range(3)))

    assert asyncio.run(awaited()) == ["hello world"] * 3

    assert serve.list_endpoints() == {
        "simple_endpoint": {"route": "/simple", "methods": ["GET"], "traffic": {"simple_backend": 1}, "shadows": {}}
    }


def test_class_handle_with_init_args(flotilla_client, url):
    serve.create_endpoint("simple_endpoint_class", backend="simple_backend_class", route="/simple-class")
    assert requests.get(url("/simple-class")).text == "hello, world!"
    assert serve.get_handle("simple_endpoint_class").remote({"any": "body"}).result() == "hello, world!"

    serve.delete_endpoint("simple_endpoint_class")
    assert "simple_endpoint_class" not in serve.list_endpoints()
    assert "simple_backend_class" in serve.list_backends()  # deleting an endpoint leaves its backends
    serve.delete_backend("simple_backend_class")


def test_scaling_out(flotilla_client):
    config = {"num_replicas": 10}
    serve.create_backend("my_scaled_endpoint_backend", handle_request, config=config, ray_actor_options={"num_cpus": 0.1})
    replicas = flotilla_client.list_replicas("my_scaled_endpoint_backend")
    assert [r["state"] for r in replicas] == ["ready"] * 10

    # scale it back down...
    config = {"num_replicas": 2}
    serve.update_backend_config("my_scaled_endpoint_backend", config)
    assert serve.get_backend_config("my_scaled_endpoint_backend").num_replicas == 2
    running = [r for r in flotilla_client.list_replicas("my_scaled_endpoint_backend") if r["state"] != "draining"]
    assert len(running) == 2
    serve.delete_backend("my_scaled_endpoint_backend")


class MyBackend:
    def __init__(self, parallelism):
        os.environ["OMP_NUM_THREADS"] = parallelism
        # Download model weights, initialize model, etc.

    def __call__(self, request):
        return os.environ["OMP_NUM_THREADS"]


def test_omp_num_threads(flotilla_client, url):
    # As the guide wrote it, 12 is an int, which os.environ refuses (in Ray too): the replica's error comes back.
    with pytest.raises(flotilla.FlotillaError) as refused:
        serve.create_backend("parallel_backend", MyBackend, 12)
    assert refused.value.code == "REPLICA_START_FAILED"
    assert "TypeError: str expected, not int" in refused.value.message
    assert "parallel_backend" not in serve.list_backends()

    serve.create_backend("parallel_backend", MyBackend, "12")
    serve.create_endpoint("parallel_backend", backend="parallel_backend", route="/parallel")
    assert requests.get(url("/parallel")).text == "12"

    def threads(request):
        return os.environ["OMP_NUM_THREADS"]

    # Flotilla sets OMP_NUM_THREADS=1 unless told otherwise, as Ray did; runtime_env env_vars sets it per backend.
    serve.create_backend("one_thread", threads)
    serve.create_backend("four_threads", threads, ray_actor_options={"runtime_env": {"env_vars": {"OMP_NUM_THREADS": "4"}}})
    serve.create_endpoint("one_thread", backend="one_thread")
    serve.create_endpoint("four_threads", backend="four_threads")
    assert serve.get_handle("one_thread").remote().result() == "1"
    assert serve.get_handle("four_threads").remote().result() == "4"


class Threshold:
    def __init__(self):
        # self.model won't be changed by reconfigure.
        self.model = random.Random()  # Imagine this is some heavyweight model.

    def reconfigure(self, config):
        # This will be called when the class is created and when
        # the user_config field of BackendConfig is updated.
        self.threshold = config["threshold"]

    def __call__(self, request):
        return self.model.random() > self.threshold


def test_user_configuration(flotilla_client, url):
    backend_config = BackendConfig(user_config={"threshold": 0.01})
    serve.create_backend("threshold", Threshold, config=backend_config)
    serve.create_endpoint("threshold", backend="threshold", route="/threshold")
    answers = [requests.get(url("/threshold")).text for _ in range(20)]
    assert answers.count("true") >= 15  # true, probably

    backend_config = BackendConfig(user_config={"threshold": 0.99})
    serve.update_backend_config("threshold", backend_config)
    answers = [requests.get(url("/threshold")).text for _ in range(20)]
    assert answers.count("false") >= 15  # false, probably
    # Only the fields given were updated.
    assert serve.get_backend_config("threshold").num_replicas == 1
    assert serve.get_backend_config("threshold").user_config == {"threshold": 0.99}


def test_imported_backend(flotilla_client, url):
    arguments = flotilla_client.start_arguments
    client = serve.start(detached=True, **arguments)  # a control plane already answers there: it is reused
    assert client.instance == flotilla_client.instance

    # Include your class as input to the ImportedBackend constructor.
    import_path = "mock_backends.utils.MockImportedBackend"
    runtime_env = {"working_dir": os.path.join(FIXTURES, "imported")}  # the module reaches the image from here
    serve.create_backend("imported", import_path, "input_arg", ray_actor_options={"runtime_env": runtime_env})
    serve.create_endpoint("imported", backend="imported", route="/imported")
    assert requests.get(url("/imported")).json() == {"arg": "input_arg", "config": None}

    serve.update_backend_config("imported", {"user_config": {"a": 1}})
    assert requests.get(url("/imported")).json() == {"arg": "input_arg", "config": {"a": 1}}

    serve.create_backend("model", "model.py:Model", 0.5, ray_actor_options={"runtime_env": runtime_env})
    serve.create_endpoint("model", backend="model")
    assert serve.get_handle("model").remote().result() == {"weight": 0.5}


def numpy_sum(request):
    return {"numpy": np.__version__, "sum": int(np.arange(5).sum())}


def test_module_imported_by_the_script_reaches_the_replica(flotilla_client, url):
    # numpy is imported at the top of this file; the backend's image gets it from Debian.
    serve.create_backend("numpy_sum", numpy_sum, ray_actor_options={"runtime_env": {"apt": ["python3-numpy"]}})
    serve.create_endpoint("numpy_sum", backend="numpy_sum", route="/numpy-sum")
    answer = requests.get(url("/numpy-sum")).json()
    assert answer == {"numpy": answer["numpy"], "sum": 10}
    assert answer["numpy"].startswith("1.")


def np_version(request):
    return "numpy " + np.__version__


def test_dependency_management(flotilla_client, url):
    # Ray's conda environments become images of their own: numpy 1 from Debian bookworm (the function shipped by
    # value), numpy 2 from Debian trixie through a Dockerfile (by import path: trixie's Python is 3.13, not ours).
    serve.create_backend("numpy1", np_version, ray_actor_options={"runtime_env": {"apt": ["python3-numpy"]}})
    serve.create_endpoint("numpy1", backend="numpy1", route="/numpy1")
    offline = subprocess.run(["docker", "image", "inspect", "flotilla-local/trixie-minbase:latest"], capture_output=True)
    trixie = "flotilla-local/trixie-minbase:latest" if offline.returncode == 0 else "debian:trixie-slim"
    runtime_env = {"working_dir": os.path.join(REPO_FIXTURES, "env-python-trixie"), "dockerfile": "Dockerfile", "build_args": {"TRIXIE_IMAGE": trixie}}
    serve.create_backend("numpy2", "model.py:versions", ray_actor_options={"runtime_env": runtime_env})
    serve.create_endpoint("numpy2", backend="numpy2", route="/numpy2")

    assert requests.get(url("/numpy1")).text.startswith("numpy 1.")
    assert requests.get(url("/numpy2")).json()["numpy"].startswith("2.")


@serve.accept_batch
def batch_sizes(requests):
    return [len(requests)] * len(requests)


def test_batching(flotilla_client):
    serve.create_backend("batched", batch_sizes, config={"max_batch_size": 4, "batch_wait_timeout": 10})
    serve.create_endpoint("batched", backend="batched")
    handle = serve.get_handle("batched")
    assert flotilla.get([handle.remote(i) for i in range(4)]) == [4, 4, 4, 4]
