"""The rest of the API: traffic, shadows and handle options."""

import pytest
import requests

import flotilla
from flotilla import serve


def version_a(request):
    return "a"


def version_b(request):
    return "b"


class Model:
    def __call__(self, request):
        return "called"

    def describe(self, request):
        return {"model": "Model"}


def test_set_traffic_and_shadow_traffic(flotilla_client, url):
    serve.create_backend("a", version_a, ray_actor_options={"num_cpus": 0.1})
    serve.create_backend("b", version_b, ray_actor_options={"num_cpus": 0.1})
    serve.create_endpoint("ab", backend="a", route="/ab")
    assert {requests.get(url("/ab")).text for _ in range(5)} == {"a"}

    serve.set_traffic("ab", {"b": 1.0})
    assert serve.list_endpoints()["ab"]["traffic"] == {"b": 1.0}
    assert {requests.get(url("/ab")).text for _ in range(5)} == {"b"}

    serve.shadow_traffic("ab", "a", 0.5)
    assert serve.list_endpoints()["ab"]["shadows"] == {"a": 0.5}
    assert requests.get(url("/ab")).text == "b"

    with pytest.raises(flotilla.FlotillaError) as refused:
        serve.set_traffic("ab", {"a": 0.5, "b": 0.2})
    assert refused.value.code == "INVALID_ARGUMENT" and "sum to 1" in refused.value.message
    assert serve.list_endpoints()["ab"]["traffic"] == {"b": 1.0}


def test_handle_options(flotilla_client):
    serve.create_backend("model", Model, ray_actor_options={"num_cpus": 0.1})
    serve.create_endpoint("model", backend="model")
    handle = serve.get_handle("model")
    assert handle.remote().result() == "called"
    assert handle.options(method_name="describe").remote().result() == {"model": "Model"}
    assert handle.options(shard_key="user-1").remote().result() == "called"
    with pytest.raises(flotilla.HandlerError) as raised:
        handle.options(method_name="missing").remote().result()
    assert raised.value.error_type == "AttributeError" and "no method 'missing'" in raised.value.message
    with pytest.raises(flotilla.FlotillaError) as refused:
        handle.remote(1, extra=object())
    assert refused.value.code == "INVALID_ARGUMENT" and "JSON" in refused.value.message
