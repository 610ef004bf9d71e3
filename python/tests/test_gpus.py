"""The guide's GPU snippets on a configured inventory of two fake GPUs (as test/integration/resources.test.ts does):
Flotilla places the replicas on GPUs by id and the engine, which has no NVIDIA runtime here, refuses to start them."""

import pytest

import flotilla
from conftest import remove_containers, start_control_plane
from flotilla import serve


def handle_request(starlette_request):
    return "hello world"


@pytest.fixture(scope="module")
def gpu_client():
    client, instance = start_control_plane(gpus="0=FakeGPU,1=FakeGPU")
    try:
        yield client
    finally:
        try:
            serve.shutdown()
        finally:
            remove_containers(instance)


def test_a_whole_gpu(gpu_client):
    config = {"num_gpus": 1}
    with pytest.raises(flotilla.FlotillaError) as refused:
        serve.create_backend("my_gpu_backend", handle_request, ray_actor_options=config)
    assert refused.value.code == "GPU_RUNTIME_MISSING"
    assert "asks for GPU 0, but the Docker engine has no NVIDIA container runtime" in refused.value.message
    assert "my_gpu_backend" not in serve.list_backends()


def test_fractional_gpus(gpu_client):
    half_gpu_config = {"num_gpus": 0.5}
    for backend in ("my_gpu_backend_1", "my_gpu_backend_2"):
        with pytest.raises(flotilla.FlotillaError) as refused:
            serve.create_backend(backend, handle_request, ray_actor_options=half_gpu_config)
        assert refused.value.code == "GPU_RUNTIME_MISSING"
        assert "asks for GPU 0," in refused.value.message


def test_more_gpus_than_the_inventory(gpu_client):
    with pytest.raises(flotilla.FlotillaError) as refused:
        serve.create_backend("too_many", handle_request, ray_actor_options={"num_gpus": 3})
    assert refused.value.code == "INSUFFICIENT_RESOURCES"
    assert "a replica needs 3 GPUs (GPU 0: 1 free, GPU 1: 1 free)" in refused.value.message
