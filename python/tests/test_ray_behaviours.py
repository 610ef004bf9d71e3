"""Ray Serve 1.x behaviours its own tests expect: variable routes, X-SERVE-CALL-METHOD, handle arguments."""

import pytest
import requests

import flotilla
from flotilla import serve


def user(request):
    return {"params": dict(request.path_params)}


def test_variable_routes_reach_the_handler_as_path_params(flotilla_client, url):
    serve.create_backend("user", user, ray_actor_options={"num_cpus": 0.1})
    serve.create_endpoint("user", backend="user", route="/api/{username}")
    answer = requests.get(url("/api/J%C3%BCrgen"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"params": {"username": "Jürgen"}}
    with pytest.raises(flotilla.FlotillaError) as taken:
        serve.create_endpoint("user2", backend="user", route="/api/{name}")
    assert taken.value.code == "ROUTE_TAKEN"
    with pytest.raises(flotilla.FlotillaError) as invalid:
        serve.create_endpoint("user3", backend="user", route="/users/{id:int}")
    assert invalid.value.code == "INVALID_ARGUMENT" and "converters" in invalid.value.message


class Scorer:
    def __call__(self, request):
        return "request"

    def score(self, a, b, scale=1):
        return (a + b) * scale


def chained(request):
    return serve.get_handle("scorer").options(method_name="score").remote(1, 2, scale=10).result()


def test_handle_calls_with_positional_and_keyword_arguments(flotilla_client, url):
    serve.create_backend("scorer", Scorer, ray_actor_options={"num_cpus": 0.1})
    serve.create_endpoint("scorer", backend="scorer")
    handle = serve.get_handle("scorer")
    assert handle.remote("x").result() == "request"
    assert handle.options(method_name="score").remote(2, 3).result() == 5
    assert handle.options(method_name="score").remote(2, b=3, scale=2).result() == 10
    with pytest.raises(flotilla.HandlerError) as raised:
        handle.options(method_name="score").remote(1, 2, missing=3).result()
    assert raised.value.error_type == "TypeError" and "missing" in raised.value.message
    serve.create_backend("chained", chained, ray_actor_options={"num_cpus": 0.1})
    serve.create_endpoint("chained", backend="chained", route="/chained")
    assert requests.get(url("/chained")).json() == 30


class Greeter:
    def __call__(self, request):
        return "call"

    def other_method(self, request):
        return "other"


def test_x_serve_call_method_only_where_the_endpoint_allows_it(flotilla_client, url):
    serve.create_backend("greeter", Greeter, ray_actor_options={"num_cpus": 0.1})
    serve.create_endpoint("greeter", backend="greeter", route="/greeter", allow_call_method=True)
    serve.create_endpoint("greeter-closed", backend="greeter", route="/greeter-closed")
    assert requests.get(url("/greeter")).text == "call"
    assert requests.get(url("/greeter"), headers={"X-SERVE-CALL-METHOD": "other_method"}).text == "other"
    refused = requests.get(url("/greeter-closed"), headers={"X-SERVE-CALL-METHOD": "other_method"})
    assert refused.status_code == 400 and "allowCallMethod" in refused.json()["error"]["message"]
