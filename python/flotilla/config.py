"""BackendConfig as Ray Serve 1.x spells it, and its translation to Flotilla's admin API."""

import json

from .errors import FlotillaError

# Ray Serve 1.x's name (and Flotilla's own, snake_case) -> the admin API's BackendConfig field.
_FIELDS = {
    "num_replicas": "numReplicas",
    "max_concurrent_queries": "maxConcurrentQueries",
    "user_config": "userConfig",
    "max_batch_size": "maxBatchSize",
    "batch_wait_timeout": "batchWaitTimeoutS",
    "max_queued_requests": "maxQueuedRequests",
    "request_timeout_s": "requestTimeoutS",
    "graceful_shutdown_timeout_s": "gracefulShutdownTimeoutS",
    "autoscaling_config": "autoscaling",
}
_ALIASES = {"experimental_graceful_shutdown_timeout_s": "graceful_shutdown_timeout_s"}
_FROM_API = {api: name for name, api in _FIELDS.items()}


def _camel(name):
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _snake(name):
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


class BackendConfig:
    """How a backend serves: Ray Serve 1.x's BackendConfig, with Flotilla's own fields too.

    Only the fields given are sent, so `update_backend_config(name, BackendConfig(user_config=...))` changes only
    user_config. Reads as attributes (`config.num_replicas`) and as a dict (`config["num_replicas"]`).
    """

    def __init__(self, **fields):
        self._set = {}
        for name, value in fields.items():
            name = _ALIASES.get(name, name)
            if name not in _FIELDS:
                raise FlotillaError(
                    "INVALID_ARGUMENT",
                    f"BackendConfig has no field '{name}'; the fields are {', '.join(_FIELDS)}",
                    400,
                )
            self._set[name] = value

    @classmethod
    def _from_api(cls, info):
        config = cls.__new__(cls)
        config._set = {name: info[api] for api, name in _FROM_API.items() if api in info}
        if isinstance(config._set.get("autoscaling_config"), dict):
            config._set["autoscaling_config"] = {_snake(k): v for k, v in config._set["autoscaling_config"].items()}
        return config

    def __getattr__(self, name):
        fields = self.__dict__.get("_set", {})
        if name in fields:
            return fields[name]
        if name in _FIELDS:
            return None
        raise AttributeError(f"BackendConfig has no field '{name}'")

    def __getitem__(self, name):
        return self._set[name]

    def __contains__(self, name):
        return name in self._set

    def __iter__(self):
        return iter(self._set)

    def keys(self):
        return self._set.keys()

    def items(self):
        return self._set.items()

    def get(self, name, default=None):
        return self._set.get(name, default)

    def dict(self):
        return dict(self._set)

    def __eq__(self, other):
        if isinstance(other, BackendConfig):
            return self._set == other._set
        return isinstance(other, dict) and self._set == other

    def __repr__(self):
        return "BackendConfig(" + ", ".join(f"{name}={value!r}" for name, value in self._set.items()) + ")"


def config_patch(config):
    """A dict or BackendConfig as the admin API's BackendConfigPatch (camelCase); None for none."""
    if config is None:
        return {}
    if isinstance(config, dict):
        config = BackendConfig(**config)
    if not isinstance(config, BackendConfig):
        raise FlotillaError("INVALID_ARGUMENT", f"config must be a dict or a BackendConfig, not {type(config).__name__}", 400)
    patch = {}
    for name, value in config.items():
        if name == "max_batch_size" and value is None:
            value = 1
        elif name == "autoscaling_config" and isinstance(value, dict):
            value = {_camel(key): item for key, item in value.items()}
        if name == "user_config":
            _check_json(value, "user_config")
        patch[_FIELDS[name]] = value
    return patch


def _check_json(value, what):
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise FlotillaError(
            "INVALID_ARGUMENT", f"{what} must be JSON values, as they travel to the replicas in JSON: {error}", 400
        ) from None
