"""The logic port served in-process: what the standalone server's connections call."""

from typing import Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from goim.logic.accounts import AccountService
from goim.logic.errors import GoimError
from goim.logic.messages import MessageService
from goim.logs import goim_observer
from goim.metrics import Metrics
from goim.logic.codes import ApiCode
from goim.logic.receipts import ReceiptService
from goim.types import (
    KIND_EDIT,
    KIND_READ,
    KIND_RECALL,
    ChangeRequest,
    ChangeResult,
    SendRequest,
    SendResult,
    SignInResult,
    SyncPage,
)

log = Logger(observer=goim_observer)


class InProcessLogic:
    """``goim.ports.LogicPort`` on top of the services of this process."""

    def __init__(
        self,
        accounts: AccountService,
        messages: MessageService,
        *,
        metrics: Metrics | None = None,
        receipts: ReceiptService | None = None,
    ) -> None:
        self.accounts = accounts
        self.messages = messages
        self.metrics = metrics
        self.receipts = receipts

    async def sign_in(self, *, device_id: int, user_id: int, token: str, conn: str = "") -> SignInResult:
        """A connection may sign in when the token is the device's and the device is bound to the user."""
        result = await self._check_sign_in(device_id, user_id, token)
        if self.metrics is not None:
            self.metrics.sign_ins.labels("ok" if result.ok else "refused").inc()
        log.info(
            "device {device_id} user {user_id} sign-in: {outcome}",
            device_id=device_id,
            user_id=user_id,
            outcome="ok" if result.ok else result.message,
        )
        return result

    async def _check_sign_in(self, device_id: int, user_id: int, token: str) -> SignInResult:
        try:
            device = await self.accounts.authenticate(device_id, token)
        except GoimError as e:
            return SignInResult(False, e.message)
        if not device.user_id or device.user_id != user_id:
            return SignInResult(False, "device is not bound to this user")
        return SignInResult(True, epoch=device.send_epoch)

    def send(self, request: SendRequest, *, conn: str = "") -> "Deferred[SendResult]":
        """Store and ACK one message (in call order: the writer's queue keeps it).
        Queued when this returns (a batch of sends is queued in a loop, each answered
        by its Deferred)."""
        return self.messages.submit(request)

    async def sync_page(self, *, device_id: int, user_id: int, after_seq: int, limit: int, conn: str = "") -> SyncPage:
        """One page of the user's messages after ``after_seq``."""
        return await self.messages.sync_page(user_id, after_seq, limit)

    def ack(self, *, device_id: int, user_id: int, seq: int, conn: str = "") -> "Deferred[None]":
        """Remember what the device holds (queued when this returns)."""
        return self.messages.ack_many(((device_id, seq),))

    def ack_many(self, acks: Sequence[tuple[int, int]]) -> "Deferred[None]":
        """``(device_id, seq)`` acks of devices checked by the caller, queued in one go."""
        return self.messages.ack_many(acks)

    async def offline(self, *, device_id: int, user_id: int, conn: str = "") -> None:
        """Nothing to do in-process: the connection table is the presence."""

    async def change(self, *, device_id: int, user_id: int, request: ChangeRequest, conn: str = "") -> ChangeResult:
        """A read report, recall or edit; a refusal is answered with its API code."""
        receipts = self.receipts
        if receipts is None:
            return ChangeResult(ApiCode.INTERNAL, "read receipts are not served here")
        try:
            if request.kind == KIND_READ:
                seq = await receipts.read(
                    user_id, device_id, request.conversation_type, request.conversation_id, request.seq
                )
                return ChangeResult(read_seq=seq)
            if request.kind == KIND_RECALL:
                await receipts.recall(user_id, device_id, request.message_id)
            elif request.kind == KIND_EDIT:
                await receipts.edit(user_id, device_id, request.message_id, request.content)
            else:
                return ChangeResult(ApiCode.BAD_REQUEST, f"unknown change kind {request.kind}")
        except GoimError as e:
            return ChangeResult(int(e.code), e.message)
        return ChangeResult()
