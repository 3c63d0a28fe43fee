"""``twistd goim-logic``: options and service maker of a logic node."""

import socket

from twisted.application.service import MultiService
from twisted.python import usage

from goim.config import (
    ServerOptions,
    Setting,
    choice,
    database_url,
    endpoint,
    node_id,
    positive_float,
    redis_url,
    required,
    secret_file,
    text,
)
from goim.protocols.websocket import parse_ws_url
from goim.distributed.nodes import LogicNodeConfig, LogicNodeService
from goim.limits import API_SETTINGS, HTTP_SETTINGS, LISTEN_SETTINGS, limits_from_options
from goim.logic.messages import DEFAULT_MAX_CONTENT, DEFAULT_SEND_BURST, DEFAULT_SEND_RATE
from goim.logs import LEVELS
from goim.storage.database import DatabaseURL
from goim.tap import max_content


class Options(ServerOptions):
    """Options of ``twistd goim-logic``."""

    synopsis = "--database mysql://... --secret-file PATH [options]"
    longdesc = "goim logic node: HTTP API, PB root for connect nodes, storage; delivery through Redis."
    settings = [
        Setting("http", "tcp:8080", endpoint, "HTTP API listener (Twisted endpoint string)"),
        Setting("pb", "tcp:50100", endpoint, "Perspective Broker listener for connect nodes"),
        Setting("database", None, required(database_url), "mysql://user:password@host:port/dbname (required)"),
        Setting("redis", "redis://127.0.0.1:6379/0", redis_url, "Redis URL"),
        Setting("redis-prefix", "goim:", text, "prefix of every Redis key and channel"),
        Setting("secret-file", None, required(secret_file), "file holding the secret shared with connect nodes"),
        Setting("node-id", f"logic-{socket.gethostname()}", node_id, "this node's name in logs"),
        Setting("max-content", DEFAULT_MAX_CONTENT, max_content, "largest message content in UTF-8 bytes"),
        Setting("web-ws-url", "/ws", parse_ws_url, "where the web page at / opens its WebSocket: a connect node's --ws as ws[s]://HOST:PORT/ws, or a path on the page's origin"),
        Setting("send-rate", DEFAULT_SEND_RATE, positive_float, "stored copies a second each user may send on average (per logic node)"),
        Setting("send-burst", DEFAULT_SEND_BURST, positive_float, "stored copies each user may send at once (per logic node)"),
        Setting("log-format", "text", choice("text", "json"), "log lines as text or one JSON object per line"),
        Setting("log-level", "info", choice(*LEVELS), "drop goim's log events below this level"),
        *LISTEN_SETTINGS,
        *HTTP_SETTINGS,
        *API_SETTINGS,
    ]

    def check(self) -> None:
        if DatabaseURL.parse(self["database"]).is_sqlite:
            raise usage.UsageError(
                "--database: logic nodes need MySQL/MariaDB: several processes share the storage, "
                "and SQLite is a file of one process (use twistd goim for SQLite)"
            )

    def config(self) -> LogicNodeConfig:
        """The parsed options."""
        return LogicNodeConfig(
            database=self["database"],
            secret=self["secret-file"],
            node_id=self["node-id"],
            http=self["http"],
            pb=self["pb"],
            redis=self["redis"],
            redis_prefix=self["redis-prefix"],
            max_content=self["max-content"],
            web_ws_url=self["web-ws-url"],
            send_rate=self["send-rate"],
            send_burst=self["send-burst"],
            log_format=self["log-format"],
            log_level=self["log-level"],
            limits=limits_from_options(self),
        )


def makeService(options: Options) -> MultiService:
    """Build a logic node (nothing runs until the reactor starts it)."""
    from twisted.internet import reactor

    return LogicNodeService(options.config(), reactor)
