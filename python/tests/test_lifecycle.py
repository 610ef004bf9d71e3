"""serve.start() without detached lives as long as the script; serve.connect() finds a control plane as the CLI does."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import uuid

import flotilla
from conftest import free_port, remove_containers
from flotilla import serve

PACKAGE = os.path.join(os.path.dirname(__file__), "..")


def run_script(source, env=None):
    ran = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": PACKAGE, **(env or {})},
        timeout=600,
    )
    assert ran.returncode == 0, ran.stderr
    return ran.stdout


def test_a_control_plane_started_without_detached_stops_with_the_script():
    instance = f"test-py{uuid.uuid4().hex[:6]}"
    options = {"instance": instance, "stateDir": tempfile.mkdtemp(prefix="flt-py-"), "admin": {"port": free_port()}, "logLevel": "warn"}
    try:
        out = run_script(
            f"""
            import json
            from flotilla import serve

            client = serve.start(http_options={{"host": "127.0.0.1", "port": {free_port()}}}, options={json.dumps(options)})
            serve.create_backend("hello", lambda request: "hello", ray_actor_options={{"num_cpus": 0.1}})
            serve.create_endpoint("hello", backend="hello")
            print(json.dumps({{"address": client.address, "answer": serve.get_handle("hello").remote().result()}}))
            """
        )
        started = json.loads(out)
        assert started["answer"] == "hello"
        try:
            serve.connect(address=started["address"], instance=instance, state_dir=options["stateDir"])
            raise AssertionError("the control plane still answers after its script exited")
        except flotilla.FlotillaError as error:
            assert error.code == "ADMIN_UNREACHABLE"
        assert subprocess.run(
            ["docker", "ps", "-a", "-q", "--filter", f"label=dev.flotilla.instance={instance}"], capture_output=True, text=True
        ).stdout.split() == []
    finally:
        remove_containers(instance)


def test_the_module_functions_connect_as_the_cli_does(flotilla_client):
    serve.create_backend("listed", lambda request: "listed", ray_actor_options={"num_cpus": 0.1})
    settings = flotilla_client._admin.settings
    env = {
        "FLOTILLA_INSTANCE": settings.instance,
        "FLOTILLA_STATE_DIR": settings.state_dir,
        "FLOTILLA_ADMIN_PORT": settings.address.rsplit(":", 1)[1],
    }
    out = run_script(
        """
        from flotilla import serve

        print(sorted(serve.list_backends()))
        """,
        env,
    )
    assert out.strip() == "['listed']"
    out = run_script(
        """
        from flotilla import serve

        try:
            serve.list_backends()
        except Exception as error:
            print(error.code, error.message)
        """,
        {**env, "FLOTILLA_STATE_DIR": tempfile.mkdtemp()},
    )
    assert out.startswith("UNAUTHORIZED") and "looked for a generated token in" in out
