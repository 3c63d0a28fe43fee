"""Operations endpoints: ``/healthz`` and ``/metrics``.

The full API serves them beside its routes; a connect node, which has no API,
serves them alone with ``OpsAPI`` (``twistd goim-connect --http ENDPOINT``).
"""

import inspect
from typing import Any, Awaitable, Callable

from klein import Klein
from twisted.python.failure import Failure
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed, NotFound

from goim.logic.errors import BAD_REQUEST
from goim.resources.envelope import envelope

#: what ``/healthz`` shows: a dict, or an awaitable of one when it probes dependencies
Health = Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]
MetricsText = Callable[[], bytes]


async def healthz_response(request: Request, health: Health | None) -> bytes:
    """The envelope of ``/healthz`` (status 200 while the process serves; the data
    says what works)."""
    data = health() if health else {}
    if inspect.isawaitable(data):
        data = await data
    return envelope(request, data)


def metrics_response(request: Request, metrics: MetricsText | None) -> bytes:
    """The Prometheus text of ``/metrics`` (not an envelope).

    Raises:
        NotFound: the process keeps no metrics.
    """
    if metrics is None:
        raise NotFound()
    request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
    return metrics()


class OpsAPI:
    """``/healthz`` and ``/metrics`` only."""

    app = Klein()

    def __init__(self, *, health: Health, metrics: MetricsText) -> None:
        self._health = health
        self._metrics = metrics

    @app.route("/healthz", methods=["GET"])
    async def healthz(self, request: Request) -> bytes:
        return await healthz_response(request, self._health)

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: Request) -> bytes:
        return metrics_response(request, self._metrics)

    @app.handle_errors(NotFound)
    def not_found(self, request: Request, failure: Failure) -> bytes:
        return envelope(request, code=BAD_REQUEST, message="not found", status=404)

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request: Request, failure: Failure) -> bytes:
        return envelope(request, code=BAD_REQUEST, message="method not allowed", status=405)
