"""The logic port served in-process: what the standalone server's connections call."""

from twisted.logger import Logger

from goim.logic.accounts import AccountService
from goim.logic.errors import GoimError
from goim.logic.messages import MessageService
from goim.logs import goim_observer
from goim.metrics import Metrics
from goim.types import SendRequest, SendResult, SignInResult, SyncPage

log = Logger(observer=goim_observer)


class InProcessLogic:
    """``goim.ports.LogicPort`` on top of the services of this process."""

    def __init__(self, accounts: AccountService, messages: MessageService, *, metrics: Metrics | None = None) -> None:
        self.accounts = accounts
        self.messages = messages
        self.metrics = metrics

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

    async def send(self, request: SendRequest, *, conn: str = "") -> SendResult:
        """Store and ACK one message (in call order: the writer's queue keeps it)."""
        return await self.messages.send(request)

    async def sync_page(self, *, device_id: int, user_id: int, after_seq: int, limit: int, conn: str = "") -> SyncPage:
        """One page of the user's messages after ``after_seq``."""
        return await self.messages.sync_page(user_id, after_seq, limit)

    async def ack(self, *, device_id: int, user_id: int, seq: int, conn: str = "") -> None:
        """Remember what the device holds."""
        await self.messages.ack(device_id, seq)

    async def offline(self, *, device_id: int, user_id: int, conn: str = "") -> None:
        """Nothing to do in-process: the connection table is the presence."""
