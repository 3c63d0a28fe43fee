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
from goim.logic.push import PushService
from goim.logic.receipts import ReceiptService
from goim.logic.retention import Retention
from goim.logic.social import SocialService
from goim.logic.webhook import OfflineWebhook, OnlineCheck
from goim.logs import goim_observer
from goim.ports import DeliveryPort, SessionPort
from goim.storage.accounts import AccountStore
from goim.storage.database import Database
from goim.storage.messages import MessageStore
from goim.storage.push import PushStore
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

    # business push, offline webhook, retention (issue 14; goim.chat_settings)
    @property
    def node_id(self) -> str: ...

    @property
    def push_key(self) -> bytes: ...

    @property
    def webhook_url(self) -> str: ...

    @property
    def webhook_secret(self) -> bytes: ...

    @property
    def retention_days(self) -> float: ...

    @property
    def dedupe_days(self) -> float: ...


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

    # --- business push, offline webhook, retention (issue 14)

    @component
    def get_push_store(self) -> PushStore:
        return PushStore(self.get_database())

    @component
    def get_push(self) -> PushService:
        return PushService(
            self.get_push_store(),
            self.get_messages(),
            self.get_id_allocator(),
            self.get_clock(),
            node_id=self.config.node_id,
            metrics=self.get_metrics(),
        )

    @component
    def get_online_check(self) -> OnlineCheck:
        raise NotImplementedError(f"{type(self).__name__} needs an online check")

    @component
    def get_webhook(self) -> OfflineWebhook | None:
        """The offline push webhook, when ``--webhook-url`` is set."""
        if not self.config.webhook_url:
            return None
        return OfflineWebhook(
            self.config.webhook_url,
            self.config.webhook_secret,
            self.get_clock(),
            self.get_online_check(),
            reactor=self.reactor,
            metrics=self.get_metrics(),
        )

    @component
    def get_retention(self) -> Retention:
        return Retention(
            self.get_push_store(),
            self.get_clock(),
            retention_days=self.config.retention_days,
            dedupe_days=self.config.dedupe_days,
            metrics=self.get_metrics(),
        )

    def start_background(self) -> None:
        """Start push jobs, the webhook hook and retention (after ``open_database``)."""
        webhook = self.get_webhook()
        if webhook is not None:
            self.get_messages().offline_hook = webhook.notify
        self.get_push().start()
        self.get_retention().start()

    async def stop_background(self) -> None:
        """Stop what ``start_background`` started (before the writer drains)."""
        self.get_retention().stop()
        self.get_push().stop()
        webhook = self.get_webhook()
        if webhook is not None:
            self.get_messages().offline_hook = None
            await webhook.stop()

    async def open_database(self) -> None:
        """Migrate the schema (refuses a schema newer than this code)."""
        db = self.get_database()
        found, now = await db.run("migrate", migrate_txn)
        if found != now:
            log.info("database schema migrated from version {found} to {now}", found=found, now=now)
        for warning in await db.durability_warnings():
            log.warn("durability: {warning}", warning=warning)
