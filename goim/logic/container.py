"""The logic side of a container: database, stores, services, in-process logic.

Used by the standalone server and by logic nodes; they differ in the delivery and
session ports they plug in (``get_delivery``/``get_sessions``).
"""

from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from goim.container import Container, component
from goim.limits import Limits
from goim.logic.accounts import AccountService
from goim.logic.ids import SegmentAllocator
from goim.logic.local import InProcessLogic
from goim.logic.messages import DEFAULT_MAX_CONTENT, MessageService
from goim.logic.passwords import ScryptCost
from goim.logic.receipts import ReceiptService
from goim.logic.social import SocialService
from goim.logs import goim_observer
from goim.ports import DeliveryPort, SessionPort
from goim.storage.accounts import AccountStore
from goim.storage.database import Database
from goim.storage.messages import MessageStore
from goim.storage.receipts import ReceiptStore
from goim.storage.schema import migrate_txn
from goim.storage.social import SocialStore

log = Logger(observer=goim_observer)


class LogicSettings(Protocol):
    """What the logic side reads of a process's configuration."""

    @property
    def database(self) -> str: ...

    @property
    def sqlite_synchronous(self) -> str: ...

    @property
    def max_content(self) -> int: ...

    @property
    def send_rate(self) -> float: ...

    @property
    def recall_window(self) -> float: ...

    @property
    def edit_window(self) -> float: ...

    @property
    def send_burst(self) -> float: ...

    @property
    def limits(self) -> Limits: ...


class LogicContainer(Container):
    """Database, stores and services of one process, each built once.

    ``get_delivery`` and ``get_sessions`` have no default: the topology provides
    them (a subclass, or ``override``).
    """

    config: LogicSettings

    @component
    def get_database(self) -> Database:
        return Database(
            self.config.database,
            self.reactor,
            metrics=self.get_metrics(),
            sqlite_synchronous=self.config.sqlite_synchronous,
        )

    @component
    def get_account_store(self) -> AccountStore:
        return AccountStore(self.get_database())

    @component
    def get_social_store(self) -> SocialStore:
        return SocialStore(self.get_database())

    @component
    def get_message_store(self) -> MessageStore:
        return MessageStore(self.get_database())

    @component
    def get_delivery(self) -> DeliveryPort:
        raise NotImplementedError(f"{type(self).__name__} needs a delivery port")

    @component
    def get_sessions(self) -> SessionPort:
        raise NotImplementedError(f"{type(self).__name__} needs a session port")

    @component
    def get_password_cost(self) -> ScryptCost:
        return ScryptCost()

    @component
    def get_run_in_thread(self) -> Callable[..., "Deferred[Any]"] | None:
        """How password hashing leaves the reactor thread (None: the reactor's pool)."""
        return None

    @component
    def get_id_allocator(self) -> SegmentAllocator:
        return SegmentAllocator(self.get_message_store())

    @component
    def get_accounts(self) -> AccountService:
        return AccountService(
            self.get_account_store(),
            self.reactor,
            password_cost=self.get_password_cost(),
            run_in_thread=self.get_run_in_thread(),
            sessions=self.get_sessions(),
            limits=self.config.limits.accounts,
            metrics=self.get_metrics(),
        )

    @component
    def get_social(self) -> SocialService:
        return SocialService(
            self.get_account_store(), self.get_social_store(), self.get_clock(), limits=self.config.limits.social
        )

    @component
    def get_messages(self) -> MessageService:
        config = self.config
        if config.max_content > DEFAULT_MAX_CONTENT:
            log.warn(
                "max-content {max_content} exceeds {default}: goim 1.1 clients cannot receive "
                "messages over one 4,092-byte frame",
                max_content=config.max_content,
                default=DEFAULT_MAX_CONTENT,
            )
        return MessageService(
            self.get_message_store(),
            self.get_account_store(),
            self.get_id_allocator(),
            self.get_delivery(),
            self.get_clock(),
            max_content=config.max_content,
            send_rate=config.send_rate,
            send_burst=config.send_burst,
            metrics=self.get_metrics(),
        )

    @component
    def get_receipt_store(self) -> ReceiptStore:
        return ReceiptStore(self.get_database())

    @component
    def get_receipts(self) -> ReceiptService:
        config = self.config
        return ReceiptService(
            self.get_receipt_store(),
            self.get_delivery(),
            self.get_clock(),
            recall_window=config.recall_window,
            edit_window=config.edit_window,
            max_content=config.max_content,
        )

    @component
    def get_logic(self) -> InProcessLogic:
        return InProcessLogic(
            self.get_accounts(), self.get_messages(), metrics=self.get_metrics(), receipts=self.get_receipts()
        )

    async def open_database(self) -> None:
        """Migrate the schema (refuses a schema newer than this code)."""
        db = self.get_database()
        found, now = await db.run("migrate", migrate_txn)
        if found != now:
            log.info("database schema migrated from version {found} to {now}", found=found, now=now)
        for warning in await db.durability_warnings():
            log.warn("durability: {warning}", warning=warning)
