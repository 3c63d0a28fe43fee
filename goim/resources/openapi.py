"""The OpenAPI 3 document of the HTTP API (served at ``/openapi.json``).

A test compares its operations with the Klein routes, so the two cannot drift.
"""

from functools import lru_cache
from typing import Any

import goim

_STRING = {"type": "string"}
_INT = {"type": "integer", "format": "int64"}
_IDS = {"type": "array", "items": {"type": "integer", "format": "int64", "minimum": 1}}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


_CONTACT = _object(
    {"user_id": _INT, "label": _STRING, "number": _STRING, "nickname": _STRING, "sex": _INT, "avatar": _STRING}
)
_GROUP = _object(
    {
        "id": _INT,
        "name": _STRING,
        "owner_id": _INT,
        "users": {"type": "array", "items": _CONTACT},
        "member_count": _INT,
        "members_next_cursor": {"type": "string", "nullable": True},
    }
)
_DEVICE = _object(
    {
        "id": _INT,
        "type": _INT,
        "brand": _STRING,
        "model": _STRING,
        "system_version": _STRING,
        "app_version": _STRING,
        "created_at": _INT,
        "current": {"type": "boolean"},
    }
)


def _list(item: dict[str, Any]) -> dict[str, Any]:
    """A paginated list: a plain array without ``cursor``, ``{items, next_cursor}`` with it."""
    array = {"type": "array", "items": item}
    return {"oneOf": [array, _object({"items": array, "next_cursor": {"type": "string", "nullable": True}})]}


#: query parameters of every paginated route
PAGE_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "empty for the first page, then the previous page's next_cursor; absent: data is a plain list",
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1},
        "description": "page size, at most the route's maximum (the default)",
    },
]
PAGED = {"/friend/all", "/group/all", "/group/members/{group_id}", "/conversations"}
#: operations that may answer 429 with Retry-After
THROTTLED = {("post", "/device"), ("post", "/user"), ("post", "/user/signin")}
#: a stored copy as the chat list shows it (issue 14)
_STORED = _object(
    {
        "message_id": _INT,
        "seq": _INT,
        "sender_type": _INT,
        "sender_id": _INT,
        "sender_device_id": _INT,
        "receiver_type": _INT,
        "receiver_id": _INT,
        "type": _INT,
        "content": _STRING,
        "send_time": _INT,
        "edited_at": _INT,
        "recalled": {"type": "boolean"},
    }
)
_CONVERSATION = _object(
    {
        "conversation_type": {"type": "integer", "description": "1 user, 2 group"},
        "conversation_id": _INT,
        "unread": _INT,
        "read_seq": _INT,
        "last_message": _STORED,
    }
)
_SESSION = _object({"user_id": _INT, "send_sequence": _INT, "sync_sequence": _INT})
_USER = _object({"id": _INT, "number": _STRING, "nickname": _STRING, "sex": _INT, "avatar": _STRING})

_PUSH_JOB = _object(
    {
        "id": _INT,
        "idempotency_key": _STRING,
        "target": _STRING,
        "user_ids": _IDS,
        "group_id": _INT,
        "message_id": _INT,
        "state": {"type": "string", "enum": ["running", "done"]},
        "recipients": _INT,
        "chunks": _INT,
        "next_after": _INT,
        "created_at": _INT,
        "updated_at": _INT,
        "created": {"type": "boolean", "description": "POST only: false when an earlier request with the key made the job"},
    }
)

#: (method, path, auth, summary, request body schema or None, data schema)
OPERATIONS: list[tuple[str, str, str, str, dict[str, Any] | None, dict[str, Any] | None]] = [
    (
        "post",
        "/device",
        "none",
        "Register a device; the token is shown only once",
        _object(
            {
                "type": {"type": "integer", "minimum": 1, "maximum": 5, "description": "1 Android, 2 iOS, 3 Windows, 4 macOS, 5 Web"},
                "brand": _STRING,
                "model": _STRING,
                "system_version": _STRING,
                "app_version": _STRING,
            },
            ["type", "brand", "model", "system_version", "app_version"],
        ),
        _object({"id": _INT, "token": _STRING}),
    ),
    (
        "post",
        "/user",
        "device",
        "Register a user and bind the device to it (starts a new send_sequence epoch)",
        _object(
            {"number": _STRING, "nickname": _STRING, "sex": _INT, "avatar": _STRING, "password": _STRING},
            ["number", "nickname", "password"],
        ),
        _SESSION,
    ),
    (
        "post",
        "/user/signin",
        "device",
        "Sign in and bind the device (send_sequence restarts at 0)",
        _object({"number": _STRING, "password": _STRING}, ["number", "password"]),
        _SESSION,
    ),
    ("post", "/device/token", "device", "Replace the device's token with a new one (refresh)", None, _object({"token": _STRING, "expires_at": _INT})),
    ("get", "/device/all", "user", "The devices bound to the signed-in user", None, {"type": "array", "items": _DEVICE}),
    ("delete", "/device/{device_id}", "user", "Sign one of the user's devices out: revoke its token, end its connection", None, None),
    ("post", "/user/signout", "device", "Sign this device out: revoke its token, end its connection", None, None),
    ("get", "/user/info", "user", "The signed-in user's profile", None, _USER),
    ("post", "/user/info", "user", "The signed-in user's profile", None, _USER),
    ("get", "/friend/all", "user", "One page of friends with their profiles", None, _list(_CONTACT)),
    (
        "post",
        "/friend",
        "user",
        "Befriend a user (mutual, idempotent)",
        _object({"friend_id": _INT, "label": _STRING}, ["friend_id"]),
        None,
    ),
    ("delete", "/friend/{friend_id}", "user", "End a friendship in both directions", None, None),
    ("get", "/group/all", "user", "One page of the user's groups, each with its first members", None, _list(_GROUP)),
    ("get", "/group/one/{group_id}", "member", "One group with its first members", None, _GROUP),
    ("get", "/group/members/{group_id}", "member", "One page of a group's members", None, _list(_CONTACT)),
    (
        "post",
        "/group",
        "user",
        "Create a group; the creator is owner and member",
        _object({"name": _STRING, "user_ids": _IDS}, ["name"]),
        _object({"id": _INT}),
    ),
    (
        "post",
        "/group/user",
        "member",
        "Add members",
        _object({"group_id": _INT, "user_ids": _IDS}, ["group_id", "user_ids"]),
        None,
    ),
    (
        "delete",
        "/group/user",
        "member",
        "Remove members: the owner anyone, others only themselves",
        _object({"group_id": _INT, "user_ids": _IDS}, ["group_id", "user_ids"]),
        None,
    ),
    (
        "put",
        "/group/user/label",
        "member",
        "Set the caller's label in a group",
        _object({"group_id": _INT, "label": _STRING}, ["group_id", "label"]),
        None,
    ),
    (
        "post",
        "/message/read",
        "user",
        "Report the conversation read up to seq (monotonic: a lower seq changes nothing)",
        _object(
            {"conversation_type": {"type": "integer", "minimum": 1, "maximum": 2}, "conversation_id": _INT, "seq": _INT},
            ["conversation_type", "conversation_id", "seq"],
        ),
        _object({"read_seq": _INT}),
    ),
    (
        "get",
        "/conversations",
        "user",
        "One page of the chat list, newest first: last message, unread count, read position",
        None,
        _object({"items": {"type": "array", "items": _CONVERSATION}, "next_cursor": {"type": "string", "nullable": True}}),
    ),
    ("get", "/message/reads/{message_id}", "user", "How many members read a group message (1016: no such group message)", None, _object({"message_id": _INT, "read_count": _INT})),
    (
        "post",
        "/message/recall",
        "user",
        "Recall a message (sender within --recall-window, or the group's owner; 1016, 1017, 1018)",
        _object({"message_id": _INT}, ["message_id"]),
        None,
    ),
    (
        "post",
        "/message/edit",
        "user",
        "Edit a message's content (sender within --edit-window; 1016, 1017, 1018, 1019)",
        _object({"message_id": _INT, "content": _STRING}, ["message_id", "content"]),
        None,
    ),
    # business push (goim.resources.push): a backend's API key, never a user token
    (
        "post",
        "/push/messages",
        "push",
        "Business push (sender_type 2) to one user, a list, a group or every user; idempotent by key",
        _object(
            {
                "idempotency_key": {"type": "string", "minLength": 1, "maxLength": 128},
                "target": {"type": "string", "enum": ["user", "users", "group", "all"]},
                "user_ids": _IDS,
                "group_id": _INT,
                "type": _INT,
                "content": _STRING,
            },
            ["idempotency_key", "target", "content"],
        ),
        _PUSH_JOB,
    ),
    ("get", "/push/jobs/{job_id}", "push", "A business push job's progress", None, _PUSH_JOB),
    ("get", "/openapi.json", "none", "This document", None, {"type": "object"}),
    ("get", "/healthz", "none", "Liveness and what the process serves", None, {"type": "object"}),
    ("get", "/metrics", "none", "Prometheus metrics (text exposition format, not an envelope)", None, None),
]


def _envelope(data: dict[str, Any] | None) -> dict[str, Any]:
    return _object({"code": _INT, "message": _STRING, "data": data or {"nullable": True}})


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI 3.0 document."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, auth, summary, body, data in OPERATIONS:
        operation: dict[str, Any] = {
            "summary": summary,
            "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": _envelope(data)}}},
                "default": {
                    "description": "error: code 1 unauthorized, 2 bad request, 3 internal, 4 device not bound, 1001-1019, 1101-1104 (docs/http-api.md)",
                    "content": {"application/json": {"schema": _envelope(None)}},
                },
            },
        }
        if (method, path) in THROTTLED:
            operation["responses"]["429"] = {
                "description": "throttled (code 1012 sign-in, 1013 registration): retry after Retry-After seconds",
                "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                "content": {"application/json": {"schema": _envelope(None)}},
            }
        if auth == "push":
            operation["security"] = [{"pushKey": []}]
            operation["x-goim-auth"] = auth
        elif auth != "none":
            operation["security"] = [{"device_id": [], "token": []}]
            operation["x-goim-auth"] = auth
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
            for name in ("friend_id", "group_id", "device_id", "message_id", "job_id")
            if "{" + name + "}" in path
        ]
        if path in PAGED:
            parameters += PAGE_PARAMETERS
        if parameters:
            operation["parameters"] = parameters
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "goim HTTP API", "version": goim.__version__},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "device_id": {"type": "apiKey", "in": "header", "name": "device_id"},
                "token": {"type": "apiKey", "in": "header", "name": "token"},
                "pushKey": {"type": "http", "scheme": "bearer", "description": "the key of --push-key-file"},
            }
        },
    }
