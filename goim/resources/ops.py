"""Operations endpoints: ``/healthz`` and ``/metrics``.

The full API serves them beside its routes; a connect node, which has no API,
serves them alone with ``OpsAPI`` (``twistd goim-connect --http ENDPOINT``).
"""

from typing import Any, Callable

from klein import Klein
from twisted.python.failure import Failure
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed, NotFound

from goim.logic.errors import BAD_REQUEST
from goim.resources.envelope import envelope

Health = Callable[[], dict[str, Any]]
MetricsText = Callable[[], bytes]


def healthz_response(request: Request, health: Health | None) -> bytes:
    """The envelope of ``/healthz``."""
    return envelope(request, health() if health else {})


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
    def healthz(self, request: Request) -> bytes:
        return healthz_response(request, self._health)

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: Request) -> bytes:
        return metrics_response(request, self._metrics)

    @app.handle_errors(NotFound)
    def not_found(self, request: Request, failure: Failure) -> bytes:
        return envelope(request, code=BAD_REQUEST, message="not found", status=404)

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request: Request, failure: Failure) -> bytes:
        return envelope(request, code=BAD_REQUEST, message="method not allowed", status=405)
