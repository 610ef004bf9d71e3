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
