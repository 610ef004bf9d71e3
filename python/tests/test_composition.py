"""Composition as Ray 1.x did it: code in a replica calls another endpoint with serve.get_handle(name).remote(x)."""

import inspect

import requests

from flotilla import serve


async def body_of(request):
    """The request body as JSON, from today's runtime's Request (sync) or Starlette's (awaitable)."""
    value = request.json()
    return await value if inspect.isawaitable(value) else value


async def model(request):
    words = (await body_of(request))["words"]
    return {"label": "long" if len(words) > 2 else "short", "seen": words}


async def preprocess(request):
    words = (await body_of(request))["text"].strip().lower().split()
    return await serve.get_handle("py-model").remote({"words": words})


def loop(request):
    return serve.get_handle("py-loop").remote().result()


def forged(request):
    from flotilla import _replica_handles

    gateway = _replica_handles.ReplicaGateway()
    gateway._token = "forged"
    try:
        gateway.call("POST", "/api/endpoints/py-model/call", {"input": {"json": {"words": []}}})
    except Exception as error:  # noqa: BLE001 - the test reads what was raised
        return {"code": getattr(error, "code", None)}
    return {"code": None}


def test_a_pipeline_of_two_backends(flotilla_client, url):
    options = {"num_cpus": 0.1}
    serve.create_backend("py-model", model, ray_actor_options=options)
    serve.create_endpoint("py-model", backend="py-model")
    serve.create_backend("py-pre", preprocess, ray_actor_options=options)
    serve.create_endpoint("py-pre", backend="py-pre", route="/py-classify", methods=["POST"])
    answer = requests.post(url("/py-classify"), json={"text": "  Hello Big   World "})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"label": "long", "seen": ["hello", "big", "world"]}
    assert serve.get_handle("py-pre").remote({"text": "one two"}).result() == {"label": "short", "seen": ["one", "two"]}


def test_a_cycle_ends_with_a_timeout_and_a_forged_token_is_refused(flotilla_client, url):
    serve.create_backend("py-loop", loop, config={"max_concurrent_queries": 1, "request_timeout_s": 3}, ray_actor_options={"num_cpus": 0.1})
    serve.create_endpoint("py-loop", backend="py-loop", route="/py-loop")
    for _ in range(2):
        answer = requests.get(url("/py-loop"), timeout=60)
        assert answer.status_code >= 500 and "REQUEST_TIMEOUT" in answer.text
    serve.create_backend("py-forged", forged, ray_actor_options={"num_cpus": 0.1})
    serve.create_endpoint("py-forged", backend="py-forged", route="/py-forged")
    assert requests.get(url("/py-forged"), timeout=60).json() == {"code": "FORBIDDEN"}
