"""The API codes of the HTTP envelope ``{code, message, data}`` (DESIGN section 4).

:class:`ApiCode` members compare equal to their numbers and format as numbers
(``str``, f-strings, JSON), so the envelope and every text that carries a code are
unchanged; ``repr`` and :meth:`ApiCode.describe` name them for logs.
"""

from enum import IntEnum

from goim.types import describe_code


class ApiCode(IntEnum):
    """The ``code`` of an HTTP API answer."""

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
    GROUP_FULL = 1008
    TOO_MANY_GROUPS = 1009
    TOO_MANY_FRIENDS = 1010
    TOO_MANY_DEVICES = 1011
    SIGN_IN_THROTTLED = 1012
    REGISTRATION_THROTTLED = 1013
    TOKEN_EXPIRED = 1014
    DEVICE_NOT_FOUND = 1015
    # read receipts, recall and edit (issue 14)
    MESSAGE_NOT_FOUND = 1016
    NOT_MESSAGE_SENDER = 1017
    CHANGE_WINDOW_CLOSED = 1018
    MESSAGE_RECALLED = 1019
    # business push (issue 14): 11xx
    PUSH_DISABLED = 1101
    PUSH_KEY_WRONG = 1102
    PUSH_JOB_NOT_FOUND = 1103
    IDEMPOTENCY_KEY_REUSED = 1104

    def __repr__(self) -> str:
        return f"ApiCode.{self.name}({self.value})"

    @classmethod
    def describe(cls, value: int) -> str:
        """``"1004 (USER_NOT_FOUND)"`` for a known code, the bare number otherwise."""
        return describe_code(cls, value)
