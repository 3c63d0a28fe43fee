"""Errors the services raise, with the API code and HTTP status of DESIGN section 4."""

from http import HTTPStatus

OK = 0
UNAUTHORIZED = 1
BAD_REQUEST = 2
INTERNAL = 3
DEVICE_NOT_BOUND = 4
WRONG_DEVICE_OR_TOKEN = 1001
NUMBER_TAKEN = 1002
WRONG_NUMBER_OR_PASSWORD = 1003
USER_NOT_FOUND = 1004
GROUP_NOT_FOUND = 1005
NOT_GROUP_MEMBER = 1006
PERMISSION_DENIED = 1007

_STATUS = {
    UNAUTHORIZED: HTTPStatus.UNAUTHORIZED,
    BAD_REQUEST: HTTPStatus.BAD_REQUEST,
    INTERNAL: HTTPStatus.INTERNAL_SERVER_ERROR,
    DEVICE_NOT_BOUND: HTTPStatus.FORBIDDEN,
    WRONG_DEVICE_OR_TOKEN: HTTPStatus.UNAUTHORIZED,
    NUMBER_TAKEN: HTTPStatus.CONFLICT,
    WRONG_NUMBER_OR_PASSWORD: HTTPStatus.UNAUTHORIZED,
    USER_NOT_FOUND: HTTPStatus.NOT_FOUND,
    GROUP_NOT_FOUND: HTTPStatus.NOT_FOUND,
    NOT_GROUP_MEMBER: HTTPStatus.FORBIDDEN,
    PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
}


class GoimError(Exception):
    """A request the service refuses, with a code clients can act on."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        """The HTTP status that goes with the code."""
        return int(_STATUS.get(self.code, HTTPStatus.BAD_REQUEST))

    def __repr__(self) -> str:
        return f"GoimError({self.code}, {self.message!r})"


def bad_request(message: str) -> GoimError:
    """A code-2 error for invalid input."""
    return GoimError(BAD_REQUEST, message)
