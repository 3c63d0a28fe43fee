"""The HTTP status of each service error code (DESIGN section 4).

The services raise ``GoimError`` with an API code and know nothing of HTTP; this
table, in the resources layer, says which status an answer with that code gets.
"""

from http import HTTPStatus

from goim.logic import errors
from goim.logic.codes import ApiCode
from goim.logic.errors import GoimError

_STATUS = {
    errors.UNAUTHORIZED: HTTPStatus.UNAUTHORIZED,
    errors.BAD_REQUEST: HTTPStatus.BAD_REQUEST,
    errors.INTERNAL: HTTPStatus.INTERNAL_SERVER_ERROR,
    errors.DEVICE_NOT_BOUND: HTTPStatus.FORBIDDEN,
    errors.WRONG_DEVICE_OR_TOKEN: HTTPStatus.UNAUTHORIZED,
    errors.NUMBER_TAKEN: HTTPStatus.CONFLICT,
    errors.WRONG_NUMBER_OR_PASSWORD: HTTPStatus.UNAUTHORIZED,
    errors.USER_NOT_FOUND: HTTPStatus.NOT_FOUND,
    errors.GROUP_NOT_FOUND: HTTPStatus.NOT_FOUND,
    errors.NOT_GROUP_MEMBER: HTTPStatus.FORBIDDEN,
    errors.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
    errors.GROUP_FULL: HTTPStatus.CONFLICT,
    errors.TOO_MANY_GROUPS: HTTPStatus.CONFLICT,
    errors.TOO_MANY_FRIENDS: HTTPStatus.CONFLICT,
    errors.TOO_MANY_DEVICES: HTTPStatus.CONFLICT,
    errors.SIGN_IN_THROTTLED: HTTPStatus.TOO_MANY_REQUESTS,
    errors.REGISTRATION_THROTTLED: HTTPStatus.TOO_MANY_REQUESTS,
    errors.TOKEN_EXPIRED: HTTPStatus.UNAUTHORIZED,
    errors.DEVICE_NOT_FOUND: HTTPStatus.NOT_FOUND,
    # read receipts, recall and edit (issue 14)
    ApiCode.MESSAGE_NOT_FOUND: HTTPStatus.NOT_FOUND,
    ApiCode.NOT_MESSAGE_SENDER: HTTPStatus.FORBIDDEN,
    ApiCode.CHANGE_WINDOW_CLOSED: HTTPStatus.CONFLICT,
    ApiCode.MESSAGE_RECALLED: HTTPStatus.CONFLICT,
    errors.PUSH_DISABLED: HTTPStatus.FORBIDDEN,
    errors.PUSH_KEY_WRONG: HTTPStatus.UNAUTHORIZED,
    errors.PUSH_JOB_NOT_FOUND: HTTPStatus.NOT_FOUND,
    errors.IDEMPOTENCY_KEY_REUSED: HTTPStatus.CONFLICT,
}


def status_of(code: int) -> int:
    """The HTTP status of an answer with API ``code`` (0: 200; unknown codes: 400)."""
    if code == errors.OK:
        return int(HTTPStatus.OK)
    return int(_STATUS.get(code, HTTPStatus.BAD_REQUEST))


def http_status(error: GoimError) -> int:
    """The HTTP status that goes with a service error."""
    return status_of(error.code)
