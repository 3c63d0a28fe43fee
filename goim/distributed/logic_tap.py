"""``twistd goim-logic``: options and service maker of a logic node."""

import socket

from twisted.application.service import MultiService
from twisted.python import usage

from goim.chat_settings import CHAT_SETTINGS, check_chat_settings
from goim.config import Setting, database_url, endpoint, node_id, redis_url, required, secret_file, text
from goim.distributed.nodes import LogicNodeConfig, LogicNodeService
from goim.limits import (
    API_SETTINGS,
    HTTP_SETTINGS,
    LISTEN_SETTINGS,
    LOG_SETTINGS,
    CHANGE_WINDOW_SETTINGS,
    MAX_CONTENT_SETTING,
    GoimOptions,
    send_budget_settings,
)
from goim.protocols.websocket import parse_ws_url
from goim.urls import parse_database_url


class Options(GoimOptions):
    """Options of ``twistd goim-logic``."""

    synopsis = "--database mysql://... --secret-file PATH [options]"
    longdesc = "goim logic node: HTTP API, PB root for connect nodes, storage; delivery through Redis."
    settings = [
        Setting("http", "tcp:8080", endpoint, "HTTP API listener (Twisted endpoint string)"),
        Setting("pb", "tcp:50100", endpoint, "Perspective Broker listener for connect nodes"),
        Setting("database", None, required(database_url), "mysql://user:password@host:port/dbname (required)"),
        Setting("redis", "redis://127.0.0.1:6379/0", redis_url, "Redis URL"),
        Setting("redis-prefix", "goim:", text, "prefix of every Redis key and channel"),
        Setting("secret-file", None, required(secret_file), "file holding the secret shared with connect nodes", field="secret"),
        Setting("node-id", f"logic-{socket.gethostname()}", node_id, "this node's name in logs"),
        MAX_CONTENT_SETTING,
        *CHANGE_WINDOW_SETTINGS,
        Setting("web-ws-url", "/ws", parse_ws_url, "where the web page at / opens its WebSocket: a connect node's --ws as ws[s]://HOST:PORT/ws, or a path on the page's origin"),
        *send_budget_settings(" (per logic node)"),
        *LOG_SETTINGS,
        *LISTEN_SETTINGS,
        *HTTP_SETTINGS,
        *API_SETTINGS,
        *CHAT_SETTINGS,
    ]

    def check(self) -> None:
        check_chat_settings(self)
        if parse_database_url(self["database"]).is_sqlite:
            raise usage.UsageError(
                "--database: logic nodes need MySQL/MariaDB: several processes share the storage, "
                "and SQLite is a file of one process (use twistd goim for SQLite)"
            )

    def config(self) -> LogicNodeConfig:
        """The parsed options."""
        return self.build_config(LogicNodeConfig)


def makeService(options: Options) -> MultiService:
    """Build a logic node (nothing runs until the reactor starts it)."""
    from twisted.internet import reactor

    service = LogicNodeService(options.config(), reactor)
    service.manage_gc = True
    return service
