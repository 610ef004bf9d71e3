"""What the package sends, without a control plane: definitions, options and configs."""

import base64
import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest

import flotilla
from flotilla import serve
from flotilla._shipping import definition_of, replica_options_of
from flotilla.config import BackendConfig, config_patch
from flotilla.errors import error_from_answer
from flotilla.handle import from_wire, to_wire

SCALE = 3


def helper(value):
    return value * SCALE


def scaled(request):
    return helper(int(np.int64(2)))


@serve.accept_batch
def batched(requests):
    return [len(requests)] * len(requests)


class Model:
    def __init__(self, weight):
        self.weight = weight

    def reconfigure(self, config):
        self.weight = config

    @serve.accept_batch
    def __call__(self, requests):
        return [self.weight] * len(requests)


def loaded(definition):
    return pickle.loads(base64.b64decode(definition["pickle"]))


def test_a_function_of_this_module_travels_by_value_with_what_it_uses():
    definition = definition_of(scaled)
    assert {k: v for k, v in definition.items() if k != "pickle"} == {
        "kind": "pickled",
        "name": "scaled",
        "isClass": False,
        "pythonVersion": "%d.%d" % sys.version_info[:2],
        "hasReconfigure": False,
        "acceptsBatch": False,
    }
    # Another interpreter, where this test module cannot be imported, runs it: helper and SCALE came along.
    load = "import pickle, sys; print(pickle.loads(sys.stdin.buffer.read())(None))"
    env = {"PATH": os.environ["PATH"]}
    ran = subprocess.run([sys.executable, "-c", load], input=base64.b64decode(definition["pickle"]), capture_output=True, cwd="/", env=env)
    assert ran.stdout == b"6\n", ran.stderr


def test_classes_and_batch_marks():
    definition = definition_of(Model)
    assert definition["isClass"] and definition["hasReconfigure"] and definition["acceptsBatch"]
    assert loaded(definition)(0.5)([1, 2]) == [0.5, 0.5]
    assert definition_of(batched)["acceptsBatch"] is True
    assert batched._serve_accept_batch is True and batched.accepts_batch is True


def test_import_paths():
    assert definition_of("model.py:Model") == {"kind": "import", "module": "model.py", "exportName": "Model"}
    assert definition_of("ray.serve.utils.MockImportedBackend") == {
        "kind": "import",
        "module": "ray/serve/utils.py",
        "exportName": "MockImportedBackend",
    }
    for bad in ("model.py", "model.py:", "no spaces:X y"):
        with pytest.raises(flotilla.FlotillaError) as refused:
            definition_of(bad)
        assert refused.value.code == "INVALID_ARGUMENT"


def test_unpicklable_closures():
    lock = threading.Lock()
    with pytest.raises(flotilla.FlotillaError) as refused:
        definition_of(lambda request: lock)
    assert refused.value.code == "UNSHIPPABLE_DEFINITION"
    assert "cannot pickle '_thread.lock' object" in refused.value.message


def test_actor_options():
    options = replica_options_of(
        {
            "num_cpus": 0.5,
            "num_gpus": 0.5,
            "memory": 300 * 1024 * 1024 + 1,
            "runtime_env": {"env_vars": {"A": "b"}, "pip": ["numpy==1.26.4"], "apt": ["python3-scipy"], "working_dir": "."},
        }
    )
    assert options == {
        "numCpus": 0.5,
        "numGpus": 0.5,
        "memoryMb": 301,
        "env": {"A": "b"},
        "runtimeEnv": {"runtime": "python", "context": os.path.abspath("."), "pip": ["numpy==1.26.4"], "apt": ["python3-scipy"]},
    }
    assert replica_options_of(None) == {"runtimeEnv": {"runtime": "python"}}
    for bad, message in [
        ({"max_restarts": 1}, "unknown keys 'max_restarts'"),
        ({"runtime_env": {"conda": "x"}}, "not a conda environment"),
        ({"runtime_env": {"py_modules": []}}, "unknown keys 'py_modules'"),
        ({"runtime_env": {"env_vars": {"A": 1}}}, "dict of strings to strings"),
        ({"runtime_env": {"pip": "/no/such/requirements.txt"}}, "cannot be read"),
        ({"memory": "1G"}, "number of bytes"),
    ]:
        with pytest.raises(flotilla.FlotillaError) as refused:
            replica_options_of(bad)
        assert refused.value.code == "INVALID_ARGUMENT" and message in refused.value.message


def test_backend_config():
    assert config_patch(BackendConfig(user_config={"threshold": 0.99})) == {"userConfig": {"threshold": 0.99}}
    assert config_patch({"num_replicas": 2, "batch_wait_timeout": 0.1, "max_batch_size": None}) == {
        "numReplicas": 2,
        "batchWaitTimeoutS": 0.1,
        "maxBatchSize": 1,
    }
    assert config_patch({"autoscaling_config": {"min_replicas": 0, "max_replicas": 3}}) == {"autoscaling": {"minReplicas": 0, "maxReplicas": 3}}
    read = BackendConfig._from_api({"numReplicas": 2, "userConfig": None, "definition": {}})
    assert read.num_replicas == 2 and read["num_replicas"] == 2 and read.max_batch_size is None
    with pytest.raises(flotilla.FlotillaError):
        BackendConfig(replicas=2)


def test_wire_values():
    for value in ("text", b"\x00\x01", {"a": [1, None]}, None, 3.5):
        assert from_wire(to_wire(value)) == value


def test_handler_errors_keep_their_type():
    error = error_from_answer("HANDLER_ERROR", "bad key", 500, {"type": "KeyError"})
    assert isinstance(error, KeyError) and isinstance(error, flotilla.HandlerError) and error.error_type == "KeyError"
    assert str(error) == "HANDLER_ERROR: KeyError: bad key"
    custom = error_from_answer("HANDLER_ERROR", "boom", 500, {"type": "ModelError"})
    assert type(custom) is flotilla.HandlerError and custom.error_type == "ModelError"
    assert type(error_from_answer("QUEUE_FULL", "full", 503)) is flotilla.FlotillaError
