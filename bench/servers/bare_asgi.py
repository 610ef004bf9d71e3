"""The ASGI baseline for the Python replica runtime: a bare Starlette app on uvicorn answering 'hello', with the runtime's
server settings (httptools, uvloop, no date or server header), so that the difference is the runtime's own work.

Its endpoint is a plain `def`, as the bench's replica handler is, so Starlette runs it on its thread pool too; with a
second argument `async` both are `async def`.
"""

import asyncio
import os
import socket
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

REPLY = "hello"


def hello(request):
    return PlainTextResponse(REPLY)


async def hello_async(request):
    return PlainTextResponse(REPLY)


async def main(path, endpoint):
    app = Starlette(routes=[Route("/{path:path}", endpoint)])
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(4096)
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=65,
        backlog=4096,
    )
    print("{}", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(sys.argv[1], hello_async if sys.argv[2:] == ["async"] else hello))
