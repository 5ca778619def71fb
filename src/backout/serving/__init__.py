"""The data plane: backout's own gateway and what it needs on the request path.

A Starlette app served by uvicorn workers: it reads the route table, picks a release per
request (weights, sticky keys, pins), runs it through a runtime from the warm pool, records
telemetry and captures, mirrors shadow traffic, and learns of route changes at once.

``app`` is the worker (routes, startup and shutdown, :class:`~backout.serving.app.Gateway`);
``pipeline`` is one request's path and ``codecs`` its bodies in and out; ``pool`` keeps the
releases warm and ``changes`` hints at route changes; ``telemetry``, ``capture`` and
``shadow`` are what a request leaves behind.
"""
