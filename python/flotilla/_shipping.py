"""What create_backend sends: the definition (a pickle, or an import path) and the replica options."""

import base64
import inspect
import math
import os
import re
import sys
import sysconfig

from .config import _check_json
from .errors import FlotillaError

# The admin API takes bodies up to 16 MiB; base64 makes a pickle a third larger.
MAX_PICKLE_BYTES = 12 * 1024 * 1024
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
_ACTOR_OPTIONS = ("num_cpus", "num_gpus", "memory", "runtime_env")
_RUNTIME_ENV_KEYS = ("env_vars", "pip", "conda", "working_dir", "context", "apt", "dockerfile", "build_args")


def _invalid(message):
    return FlotillaError("INVALID_ARGUMENT", message, 400)


def _unshippable(what, why):
    return FlotillaError(
        "UNSHIPPABLE_DEFINITION",
        f"{what} cannot be shipped to a replica: {why}. Functions and classes are pickled with cloudpickle, as Ray does: "
        "what they refer to must be picklable (no locks, open files or sockets); create those in __init__, or serve the "
        "code by import path from a context directory ('model.py:Model' with runtime_env={'working_dir': DIR}).",
        400,
    )


def accepts_batch(target):
    """Marked with serve.accept_batch: the target itself, or a class's __call__ or call method (as Ray 1.x wrote it)."""

    def marked(value):
        return getattr(value, "_serve_accept_batch", False) is True or getattr(value, "accepts_batch", False) is True

    if marked(target):
        return True
    return inspect.isclass(target) and any(marked(target.__dict__.get(name)) for name in ("__call__", "call"))


def _is_user_module(module):
    """A module of the caller's own (a script, a test file), not one installed in Python's library directories."""
    path = getattr(module, "__file__", None)
    if not path or module.__name__.split(".")[0] == "flotilla":
        return False
    path = os.path.realpath(path)
    installed = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    if any(path.startswith(os.path.realpath(root) + os.sep) for root in installed):
        return False
    return not any(part in ("site-packages", "dist-packages") for part in path.split(os.sep))


def _pickled(target, what):
    try:
        import cloudpickle
    except ImportError:
        raise _unshippable(what, "cloudpickle is not installed here (Debian: apt-get install python3-cloudpickle)") from None
    module = sys.modules.get(getattr(target, "__module__", None) or "")
    by_value = module is not None and module.__name__ != "__main__" and _is_user_module(module)
    registered = False
    if by_value:
        try:
            cloudpickle.register_pickle_by_value(module)
            registered = True
        except ValueError:  # already registered by the caller
            pass
    try:
        return cloudpickle.dumps(target)
    except Exception as error:  # noqa: BLE001 - whatever pickling raised, the caller must hear why
        raise _unshippable(what, f"{type(error).__name__}: {error}") from None
    finally:
        if registered:
            cloudpickle.unregister_pickle_by_value(module)


def import_definition(path):
    """'model.py:Model' as it is; a dotted module path 'pkg.module.Model' as 'pkg/module.py:Model' in the context."""
    path = path.strip()
    if ":" in path:
        module, _, export = path.rpartition(":")
        if not module or not export.isidentifier():
            raise _invalid(f"import path '{path}' is not of the form 'file.py:Name' or 'package.module.Name'")
        return {"kind": "import", "module": module, "exportName": export}
    if _DOTTED.match(path):
        module, _, export = path.rpartition(".")
        if export == "py":
            raise _invalid(f"import path '{path}' names a file without a function or class: write 'file.py:Name'")
        return {"kind": "import", "module": module.replace(".", "/") + ".py", "exportName": export}
    raise _invalid(f"import path '{path}' is not of the form 'file.py:Name' or 'package.module.Name'")


def definition_of(target):
    """The admin API's definition of a function, a class or an import path."""
    if isinstance(target, str):
        return import_definition(target)
    if not callable(target):
        raise _invalid(f"a backend is a function, a class or an import path, not {type(target).__name__}")
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or type(target).__name__
    is_class = inspect.isclass(target)
    what = f"{'class' if is_class else 'function'} {name}"
    payload = _pickled(target, what)
    if len(payload) > MAX_PICKLE_BYTES:
        raise _unshippable(
            what,
            f"it pickles to {len(payload) / 1048576:.1f} MiB, above {MAX_PICKLE_BYTES // 1048576} MiB (it carries large data "
            "along); load large data in __init__ from files in the backend's image instead",
        )
    return {
        "kind": "pickled",
        "name": name,
        "isClass": is_class,
        "pickle": base64.b64encode(payload).decode("ascii"),
        "pythonVersion": "%d.%d" % sys.version_info[:2],
        "hasReconfigure": is_class and callable(getattr(target, "reconfigure", None)),
        "acceptsBatch": accepts_batch(target),
    }


def _string_list(value, what):
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _invalid(f"{what} must be a list of strings, got {value!r}")
    return [v.strip() for v in value]


def _requirements(pip):
    """runtime_env['pip']: a list of requirements, or the path of a requirements.txt."""
    if isinstance(pip, str):
        try:
            with open(pip, encoding="utf-8") as file:
                lines = [line.split("#", 1)[0].strip() for line in file]
        except OSError as error:
            raise _invalid(f"runtime_env['pip'] '{pip}' cannot be read: {error}") from None
        return [line for line in lines if line]
    return _string_list(pip, "runtime_env['pip']")


def runtime_env_of(env):
    """Ray's runtime_env as Flotilla's runtimeEnv (what goes into the backend's image) and extra environment variables."""
    if env is None:
        return {"runtime": "python"}, {}
    if not isinstance(env, dict):
        raise _invalid(f"runtime_env must be a dict, not {type(env).__name__}")
    unknown = [key for key in env if key not in _RUNTIME_ENV_KEYS]
    if unknown:
        raise _invalid(f"runtime_env has unknown keys {', '.join(map(repr, unknown))}; allowed: {', '.join(_RUNTIME_ENV_KEYS)}")
    if "conda" in env:
        raise _invalid(
            "runtime_env['conda'] is not supported: Flotilla isolates a backend's dependencies in an image of its own, not a "
            "conda environment. List Python packages with runtime_env={'pip': [...]} (or requirements.txt in a context), "
            "Debian packages with {'apt': [...]}, or build any environment with {'working_dir': DIR, 'dockerfile': "
            "'Dockerfile'} (docs/environments.md)"
        )
    runtime_env = {"runtime": "python"}
    if "working_dir" in env and "context" in env:
        raise _invalid("runtime_env takes working_dir or context (the same thing: the directory that becomes /app), not both")
    context = env.get("working_dir", env.get("context"))
    if context is not None:
        if not isinstance(context, str) or not context:
            raise _invalid(f"runtime_env['working_dir'] must be a directory path, got {context!r}")
        runtime_env["context"] = os.path.abspath(context)
    if "pip" in env:
        runtime_env["pip"] = _requirements(env["pip"])
    if "apt" in env:
        runtime_env["apt"] = _string_list(env["apt"], "runtime_env['apt']")
    if "dockerfile" in env:
        runtime_env["dockerfile"] = env["dockerfile"]
    if "build_args" in env:
        runtime_env["buildArgs"] = env["build_args"]
    env_vars = env.get("env_vars", {})
    if not isinstance(env_vars, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()):
        raise _invalid(f"runtime_env['env_vars'] must be a dict of strings to strings, got {env_vars!r}")
    return runtime_env, dict(env_vars)


def replica_options_of(ray_actor_options):
    """ray_actor_options as Flotilla's replicaOptions."""
    options = ray_actor_options or {}
    if not isinstance(options, dict):
        raise _invalid(f"ray_actor_options must be a dict, not {type(options).__name__}")
    unknown = [key for key in options if key not in _ACTOR_OPTIONS]
    if unknown:
        raise _invalid(
            f"ray_actor_options has unknown keys {', '.join(map(repr, unknown))}; Flotilla takes {', '.join(_ACTOR_OPTIONS)}"
        )
    runtime_env, env = runtime_env_of(options.get("runtime_env"))
    replica = {"runtimeEnv": runtime_env}
    if env:
        replica["env"] = env
    if "num_cpus" in options:
        replica["numCpus"] = options["num_cpus"]
    if "num_gpus" in options:
        replica["numGpus"] = options["num_gpus"]
    if options.get("memory") is not None:
        memory = options["memory"]
        if not isinstance(memory, (int, float)) or isinstance(memory, bool) or memory <= 0:
            raise _invalid(f"ray_actor_options['memory'] must be a number of bytes, got {memory!r}")
        replica["memoryMb"] = math.ceil(memory / 1048576)
    return replica


def init_args_of(init_args):
    args = list(init_args)
    _check_json(args, "init_args")
    return args
