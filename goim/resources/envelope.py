"""The ``{code, message, data}`` envelope, request parsing and input validation.

Everything here is about HTTP and JSON; no business rules. Validation answers the
shape of the input (types, presence, sizes); the services judge its meaning.
"""

import json
import re
from typing import Any, Mapping

from twisted.web.server import Request

from goim.logic.codes import ApiCode
from goim.logic.errors import UNAUTHORIZED, GoimError, bad_request

#: request bodies larger than this are refused with 400 code 2
MAX_BODY_BYTES = 64 * 1024
#: the most ids one request may list (group members)
MAX_IDS = 2000
#: the deepest nesting of arrays and objects a request body may have
MAX_DEPTH = 16

_SURROGATE = re.compile("[\ud800-\udfff]")


def envelope(
    request: Request, data: Any = None, *, code: int = ApiCode.OK, message: str = "ok", status: int = 200
) -> bytes:
    """Write the status and content type; return the JSON envelope as bytes.

    ``code`` is an :class:`~goim.logic.codes.ApiCode` (or any int); the JSON carries
    its number.
    """
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    return json.dumps({"code": int(code), "message": message, "data": data}, ensure_ascii=False).encode("utf-8")


def read_json(request: Request, *, max_bytes: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The request's JSON object body.

    Raises:
        GoimError: code 2 for a body over ``max_bytes``, malformed JSON, or JSON
            that is not an object.
    """
    length = request.getHeader(b"content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise bad_request(f"request body is larger than {max_bytes} bytes")
    content = request.content
    raw = content.read(max_bytes + 1) if content is not None else b""
    if len(raw) > max_bytes:
        raise bad_request(f"request body is larger than {max_bytes} bytes")
    if not raw.strip():
        raise bad_request("request body must be a JSON object")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise bad_request(f"malformed JSON: {e}") from None
    except RecursionError:
        raise bad_request(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    check_json_text(body)
    return body


def check_json_text(value: Any) -> None:
    """Refuse nesting deeper than ``MAX_DEPTH`` and strings that are not valid Unicode.

    JSON may spell lone UTF-16 surrogates (``"\\ud800"``); Python decodes them
    into strings that no UTF-8 encoder (database drivers, our own responses)
    accepts, so they are refused here, in keys and values alike. Iterative, so
    that no nesting can exhaust the stack.

    Raises:
        GoimError: code 2.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise bad_request("strings must be valid Unicode (no lone surrogates)")
        elif isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise bad_request(f"JSON nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)


def text_field(body: Mapping[str, Any], name: str, *, default: str | None = None) -> str:
    """A string field; missing → ``default`` or a code-2 error."""
    value = body.get(name, default)
    if value is None:
        raise bad_request(f"{name} is required")
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    return value


def int_field(body: Mapping[str, Any], name: str, *, default: int | None = None, positive: bool = False) -> int:
    """An integer field (JSON booleans are not integers); missing → ``default`` or code 2."""
    value = body.get(name, default)
    if value is None:
        raise bad_request(f"{name} is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{name} must be an integer")
    if not -(2**63) <= value < 2**63:
        raise bad_request(f"{name} is out of range")
    if positive and value <= 0:
        raise bad_request(f"{name} must be positive")
    return value


def id_list_field(body: Mapping[str, Any], name: str, *, allow_empty: bool = True) -> list[int]:
    """A list of positive integer ids, duplicates removed, order kept."""
    value = body.get(name, [] if allow_empty else None)
    if value is None:
        raise bad_request(f"{name} is required")
    if not isinstance(value, list):
        raise bad_request(f"{name} must be a list of user ids")
    if len(value) > MAX_IDS:
        raise bad_request(f"{name} lists more than {MAX_IDS} ids")
    ids: list[int] = []
    seen: set[int] = set()  # a set: 2,000 ids must not cost 2,000² comparisons on the reactor
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 0 < item < 2**63:
            raise bad_request(f"{name} must contain positive integer ids")
        if item not in seen:
            seen.add(item)
            ids.append(item)
    if not ids and not allow_empty:
        raise bad_request(f"{name} must not be empty")
    return ids


def path_id(value: int, name: str) -> int:
    """An id taken from the URL path."""
    if not 0 < value < 2**63:
        raise bad_request(f"{name} must be a positive integer")
    return value


def query_cursor(request: Request) -> int | None:
    """The ``cursor`` query parameter: None when absent, 0 when empty (the first page).

    Raises:
        GoimError: code 2 for a cursor that is not one this API returned.
    """
    values = (request.args or {}).get(b"cursor")
    if values is None:
        return None
    raw = values[-1]
    if raw == b"":
        return 0
    if not raw.isdigit() or len(raw) > 19 or not 0 < int(raw) < 2**63:
        raise bad_request("cursor must be the next_cursor of a previous page")
    return int(raw)


def query_limit(request: Request, *, maximum: int) -> int:
    """The ``limit`` query parameter (page size), ``maximum`` when absent.

    Raises:
        GoimError: code 2 for a limit outside 1..maximum.
    """
    values = (request.args or {}).get(b"limit")
    if values is None:
        return maximum
    raw = values[-1]
    if not raw.isdigit() or len(raw) > 9 or not 1 <= int(raw) <= maximum:
        raise bad_request(f"limit must be an integer from 1 to {maximum}")
    return int(raw)


def client_address(request: Request) -> str:
    """The address of the client at the other end of the connection (no proxy headers trusted)."""
    return str(getattr(request.getClientAddress(), "host", "") or "")


def credentials(request: Request) -> tuple[int, str]:
    """``(device_id, token)`` from the ``device_id`` and ``token`` headers (as goim 1.1 sends them).

    Raises:
        GoimError: code 1 when either header is missing or malformed.
    """
    device = request.getHeader(b"device_id") or request.getHeader(b"device-id")
    token = request.getHeader(b"token")
    if not device or not token:
        raise GoimError(UNAUTHORIZED, "headers device_id and token are required")
    try:
        device_id = int(device)
    except ValueError:
        raise GoimError(UNAUTHORIZED, "header device_id must be an integer") from None
    if not 0 < device_id < 2**63:
        raise GoimError(UNAUTHORIZED, "header device_id must be a positive integer")
    return device_id, token.decode("utf-8", "replace")

