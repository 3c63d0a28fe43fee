"""The HTTP API of DESIGN section 4.

Each route authenticates, validates the shape of its input, calls one service
method and wraps the result in the envelope. Errors of every kind — the services'
``GoimError``, unknown paths, wrong methods, unexpected exceptions — leave as an
envelope with the matching HTTP status.
"""

from dataclasses import asdict
from typing import Any, Callable

from klein import Klein
from twisted.logger import Logger
from twisted.web.server import Request

from goim.logic.accounts import AccountService, Device
from goim.logic.errors import INTERNAL, PUSH_DISABLED, GoimError
from goim.logic.receipts import CONVERSATION_PAGE, Conversation, ReceiptService
from goim.logic.social import FRIEND_PAGE, GROUP_PAGE, MEMBER_PAGE, Contact, GroupInfo, Page, SocialService
from goim.logs import goim_observer
from goim.types import StoredMessage
from goim.resources import errors
from goim.resources.envelope import (
    client_address,
    credentials,
    envelope,
    id_list_field,
    int_field,
    path_id,
    query_cursor,
    query_limit,
    read_json,
    text_field,
)
from goim.resources.openapi import openapi_document
from goim.resources.ops import Health, healthz_response, metrics_response

log = Logger(observer=goim_observer)


def _contact(c: Contact) -> dict[str, Any]:
    # not dataclasses.asdict: it deep-copies every field and was 80% of a 1,000-contact page
    return {
        "user_id": c.user_id,
        "label": c.label,
        "number": c.number,
        "nickname": c.nickname,
        "sex": c.sex,
        "avatar": c.avatar,
    }


def _group(g: GroupInfo) -> dict[str, Any]:
    return {
        "id": g.id,
        "name": g.name,
        "owner_id": g.owner_id,
        "users": [_contact(u) for u in g.users],
        "member_count": g.member_count,
        "members_next_cursor": _cursor(g.members_next),
    }


def _stored(m: StoredMessage) -> dict[str, Any]:
    return {
        "message_id": m.message_id,
        "seq": m.seq,
        "sender_type": m.sender_type,
        "sender_id": m.sender_id,
        "sender_device_id": m.sender_device_id,
        "receiver_type": m.receiver_type,
        "receiver_id": m.receiver_id,
        "type": m.type,
        "content": m.content,
        "send_time": m.send_time,
        "edited_at": m.edited_at,
        "recalled": m.recalled,
    }


def _conversation(c: Conversation) -> dict[str, Any]:
    return {
        "conversation_type": c.conv_type,
        "conversation_id": c.conv_id,
        "unread": c.unread,
        "read_seq": c.read_seq,
        "last_message": _stored(c.last),
    }


def _cursor(value: int | None) -> str | None:
    return None if value is None else str(value)


#: the response header that carries the next page's cursor
NEXT_CURSOR_HEADER = b"Goim-Next-Cursor"


def _page(request: Request, page: Page, render: Callable[[Any], dict[str, Any]], cursor: int | None) -> bytes:
    """A list route's answer.

    Without a ``cursor`` query parameter (goim 1.1 clients), ``data`` is the
    first page as a plain list, as in goim 1.1; with one (``cursor=`` for the
    first page), ``data`` is ``{items, next_cursor}``. Either way the
    ``Goim-Next-Cursor`` header names the next page while there is one.
    """
    items = [render(item) for item in page.items]
    if page.next is not None:
        request.setHeader(NEXT_CURSOR_HEADER, str(page.next).encode())
    if cursor is None:
        return envelope(request, items)
    return envelope(request, {"items": items, "next_cursor": _cursor(page.next)})


class GoimAPI:
    """The Klein application; services come in through the constructor."""

    app = Klein()

    def __init__(
        self,
        accounts: AccountService,
        social: SocialService,
        *,
        receipts: ReceiptService | None = None,
        metrics: Callable[[], bytes] | None = None,
        health: Health | None = None,
        push: Any = None,
    ) -> None:
        """
        Args:
            accounts: devices and users.
            social: friends and groups.
            metrics: returns the Prometheus text exposition for ``/metrics``.
            health: returns the details ``/healthz`` shows.
            push: the business push routes (``goim.resources.push.PushAPI``) served
                under ``/push/``; None: they answer code 1101.
        """
        self.accounts = accounts
        self.social = social
        self._receipts = receipts
        self._metrics = metrics
        self._health = health
        self._push = push

    async def _device(self, request: Request) -> Device:
        device_id, token = credentials(request)
        return await self.accounts.authenticate(device_id, token)

    async def _user(self, request: Request) -> int:
        return (await self._user_device(request)).user_id

    async def _user_device(self, request: Request) -> Device:
        device_id, token = credentials(request)
        return await self.accounts.authenticate_user(device_id, token)

    # --- devices and users

    @app.route("/device", methods=["POST"])
    async def register_device(self, request: Request) -> bytes:
        body = read_json(request)
        device_id, token = await self.accounts.register_device(
            device_type=int_field(body, "type"),
            brand=text_field(body, "brand"),
            model=text_field(body, "model"),
            system_version=text_field(body, "system_version"),
            app_version=text_field(body, "app_version"),
            client=client_address(request),
        )
        return envelope(request, {"id": device_id, "token": token})

    @app.route("/device/token", methods=["POST"])
    async def refresh_token(self, request: Request) -> bytes:
        device = await self._device(request)
        new = await self.accounts.refresh_token(device)
        return envelope(request, {"token": new.token, "expires_at": new.expires_at})

    @app.route("/device/all", methods=["GET"])
    async def list_devices(self, request: Request) -> bytes:
        device = await self._user_device(request)
        devices = await self.accounts.list_devices(device.user_id)
        return envelope(request, [{**asdict(d), "current": d.id == device.id} for d in devices])

    @app.route("/device/<int(signed=True):device_id>", methods=["DELETE"])
    async def delete_device(self, request: Request, device_id: int) -> bytes:
        user_id = await self._user(request)
        await self.accounts.delete_device(user_id, path_id(device_id, "device_id"))
        return envelope(request)

    @app.route("/user/signout", methods=["POST"])
    async def sign_out(self, request: Request) -> bytes:
        device = await self._device(request)
        await self.accounts.sign_out(device)
        return envelope(request)

    @app.route("/user", methods=["POST"])
    async def register_user(self, request: Request) -> bytes:
        device = await self._device(request)
        body = read_json(request)
        session = await self.accounts.register_user(
            device.id,
            number=text_field(body, "number"),
            nickname=text_field(body, "nickname"),
            sex=int_field(body, "sex", default=0),
            avatar=text_field(body, "avatar", default=""),
            password=text_field(body, "password"),
            client=client_address(request),
        )
        return envelope(request, asdict(session))

    @app.route("/user/signin", methods=["POST"])
    async def sign_in(self, request: Request) -> bytes:
        device = await self._device(request)
        body = read_json(request)
        session = await self.accounts.sign_in_user(
            device.id,
            number=text_field(body, "number"),
            password=text_field(body, "password"),
            client=client_address(request),
        )
        return envelope(request, asdict(session))

    @app.route("/user/info", methods=["GET", "POST"])
    async def user_info(self, request: Request) -> bytes:
        user_id = await self._user(request)
        user = await self.accounts.get_user(user_id)
        return envelope(request, asdict(user))

    # --- friends

    @app.route("/friend/all", methods=["GET"])
    async def list_friends(self, request: Request) -> bytes:
        user_id = await self._user(request)
        cursor, limit = query_cursor(request), query_limit(request, maximum=FRIEND_PAGE)
        page = await self.social.list_friends(user_id, after=cursor or 0, limit=limit)
        return _page(request, page, _contact, cursor)

    @app.route("/friend", methods=["POST"])
    async def add_friend(self, request: Request) -> bytes:
        user_id = await self._user(request)
        body = read_json(request)
        await self.social.add_friend(
            user_id, int_field(body, "friend_id", positive=True), text_field(body, "label", default="")
        )
        return envelope(request)

    @app.route("/friend/<int(signed=True):friend_id>", methods=["DELETE"])
    async def delete_friend(self, request: Request, friend_id: int) -> bytes:
        user_id = await self._user(request)
        await self.social.delete_friend(user_id, path_id(friend_id, "friend_id"))
        return envelope(request)

    # --- groups

    @app.route("/group/all", methods=["GET"])
    async def list_groups(self, request: Request) -> bytes:
        user_id = await self._user(request)
        cursor, limit = query_cursor(request), query_limit(request, maximum=GROUP_PAGE)
        page = await self.social.list_groups(user_id, after=cursor or 0, limit=limit)
        return _page(request, page, _group, cursor)

    @app.route("/group/members/<int(signed=True):group_id>", methods=["GET"])
    async def group_members(self, request: Request, group_id: int) -> bytes:
        user_id = await self._user(request)
        cursor, limit = query_cursor(request), query_limit(request, maximum=MEMBER_PAGE)
        page = await self.social.group_members(user_id, path_id(group_id, "group_id"), after=cursor or 0, limit=limit)
        return _page(request, page, _contact, cursor)

    @app.route("/group/one/<int(signed=True):group_id>", methods=["GET"])
    async def get_group(self, request: Request, group_id: int) -> bytes:
        user_id = await self._user(request)
        return envelope(request, _group(await self.social.get_group(user_id, path_id(group_id, "group_id"))))

    @app.route("/group", methods=["POST"])
    async def create_group(self, request: Request) -> bytes:
        user_id = await self._user(request)
        body = read_json(request)
        group_id = await self.social.create_group(
            user_id, text_field(body, "name"), id_list_field(body, "user_ids")
        )
        return envelope(request, {"id": group_id})

    @app.route("/group/user", methods=["POST"])
    async def add_members(self, request: Request) -> bytes:
        user_id = await self._user(request)
        body = read_json(request)
        await self.social.add_members(
            user_id, int_field(body, "group_id", positive=True), id_list_field(body, "user_ids", allow_empty=False)
        )
        return envelope(request)

    @app.route("/group/user", methods=["DELETE"])
    async def remove_members(self, request: Request) -> bytes:
        user_id = await self._user(request)
        body = read_json(request)
        await self.social.remove_members(
            user_id, int_field(body, "group_id", positive=True), id_list_field(body, "user_ids", allow_empty=False)
        )
        return envelope(request)

    @app.route("/group/user/label", methods=["PUT"])
    async def set_label(self, request: Request) -> bytes:
        user_id = await self._user(request)
        body = read_json(request)
        await self.social.set_label(
            user_id, int_field(body, "group_id", positive=True), text_field(body, "label")
        )
        return envelope(request)

    # --- business push (goim.resources.push)

    @app.route("/push/", branch=True)
    def push(self, request: Request) -> Any:
        if self._push is None:
            raise GoimError(PUSH_DISABLED, "business push is disabled: start goim with --push-key-file")
        return self._push.app.resource()

    # --- operations

    # --- read receipts, recall and edit (issue 14)

    @property
    def receipts(self) -> ReceiptService:
        if self._receipts is None:
            raise GoimError(INTERNAL, "read receipts are not served here")
        return self._receipts

    @app.route("/message/read", methods=["POST"])
    async def report_read(self, request: Request) -> bytes:
        device = await self._user_device(request)
        body = read_json(request)
        read_seq = await self.receipts.read(
            device.user_id,
            device.id,
            int_field(body, "conversation_type", positive=True),
            int_field(body, "conversation_id", positive=True),
            int_field(body, "seq"),
        )
        return envelope(request, {"read_seq": read_seq})

    @app.route("/conversations", methods=["GET"])
    async def list_conversations(self, request: Request) -> bytes:
        user_id = await self._user(request)
        cursor, limit = query_cursor(request), query_limit(request, maximum=CONVERSATION_PAGE)
        page = await self.receipts.conversations(user_id, before=cursor or 0, limit=limit)
        if page.next is not None:
            request.setHeader(NEXT_CURSOR_HEADER, str(page.next).encode())
        return envelope(request, {"items": [_conversation(c) for c in page.items], "next_cursor": _cursor(page.next)})

    @app.route("/message/reads/<int(signed=True):message_id>", methods=["GET"])
    async def read_count(self, request: Request, message_id: int) -> bytes:
        user_id = await self._user(request)
        message_id = path_id(message_id, "message_id")
        count = await self.receipts.read_count(user_id, message_id)
        return envelope(request, {"message_id": message_id, "read_count": count})

    @app.route("/message/recall", methods=["POST"])
    async def recall(self, request: Request) -> bytes:
        device = await self._user_device(request)
        body = read_json(request)
        await self.receipts.recall(device.user_id, device.id, int_field(body, "message_id", positive=True))
        return envelope(request)

    @app.route("/message/edit", methods=["POST"])
    async def edit(self, request: Request) -> bytes:
        device = await self._user_device(request)
        body = read_json(request)
        await self.receipts.edit(
            device.user_id, device.id, int_field(body, "message_id", positive=True), text_field(body, "content")
        )
        return envelope(request)

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request: Request) -> bytes:
        return envelope(request, openapi_document())

    @app.route("/healthz", methods=["GET"])
    async def healthz(self, request: Request) -> bytes:
        return await healthz_response(request, self._health)

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: Request) -> bytes:
        return metrics_response(request, self._metrics)


# every error of the routes above: goim.resources.errors
errors.install_error_handlers(GoimAPI.app, log)
