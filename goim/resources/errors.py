"""The answers, and log lines, of refused and failed HTTP requests: one set for every
Klein app of the API (goim.resources.api, goim.resources.push)."""

from __future__ import annotations

import math
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request
from werkzeug.exceptions import MethodNotAllowed, NotFound

from goim.logic.errors import BAD_REQUEST, INTERNAL, GoimError
from goim.resources.envelope import envelope
from goim.resources.status import http_status


def request_text(value: bytes | None) -> str:
    """A request's method or path for a log line."""
    return (value or b"").decode("utf-8", "replace")


def goim_error(log: Logger, request: Request, failure: Failure) -> bytes:
    """A service's refusal: its code, its HTTP status, ``Retry-After`` when it has one."""
    error = failure.value
    assert isinstance(error, GoimError)
    status = http_status(error)
    log.info(
        "HTTP {method} {path}: {status} code {code}: {message}",
        method=request_text(request.method),
        path=request_text(request.path),
        status=status,
        code=error.code,
        message=error.message,
    )
    if error.retry_after is not None:
        request.setHeader(b"Retry-After", str(max(1, math.ceil(error.retry_after))).encode())
    return envelope(request, code=error.code, message=error.message, status=status)


def not_found(log: Logger, request: Request, failure: Failure) -> bytes:
    """No route: 404 with code 2."""
    log.info("HTTP {method} {path}: 404", method=request_text(request.method), path=request_text(request.path))
    return envelope(request, code=BAD_REQUEST, message="not found", status=404)


def method_not_allowed(log: Logger, request: Request, failure: Failure) -> bytes:
    """A route without this method: 405 with ``Allow``."""
    allowed = getattr(failure.value, "valid_methods", None) or []
    if allowed:
        request.setHeader(b"Allow", ", ".join(allowed).encode())
    log.info("HTTP {method} {path}: 405", method=request_text(request.method), path=request_text(request.path))
    return envelope(request, code=BAD_REQUEST, message="method not allowed", status=405)


def internal_error(log: Logger, request: Request, failure: Failure) -> bytes:
    """Anything else: 500 with code 3 and the traceback in the log; nothing for a
    request whose client went away while it was worked on."""
    method, path = request_text(request.method), request_text(request.path)
    if failure.check(CancelledError):
        log.info("HTTP {method} {path}: cancelled", method=method, path=path)
        return b""
    log.failure("HTTP {method} {path}: unhandled error", failure, method=method, path=path)
    return envelope(request, code=INTERNAL, message="internal error", status=500)


def install_error_handlers(app: Any, log: Logger) -> None:
    """Answer every error of a class-level Klein ``app`` as above, logging to ``log``."""
    for kind, answer in (
        (GoimError, goim_error),
        (NotFound, not_found),
        (MethodNotAllowed, method_not_allowed),
        (Exception, internal_error),
    ):
        app.handle_errors(kind)(_handler(answer, log))


def _handler(answer: Any, log: Logger) -> Any:
    def handle(resource: object, request: Request, failure: Failure) -> bytes:
        result: bytes = answer(log, request, failure)
        return result

    return handle
