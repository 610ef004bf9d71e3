"""The Python backend of bench/cold-start.ts: as little as a backend can be, so that a cold start is Flotilla's and the runtime's own cost."""


def hello(request):
    return "hello"
