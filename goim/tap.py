"""``twistd goim``: options and service maker of the standalone server."""

from twisted.application.service import MultiService

from goim.chat_settings import CHAT_SETTINGS, check_chat_settings
from goim.config import Setting, choice, database_url, endpoint, idle_timeout_warning, optional, positive_float
from goim.limits import (
    API_SETTINGS,
    CONNECTION_SETTINGS,
    HTTP_SETTINGS,
    LISTEN_SETTINGS,
    LOG_SETTINGS,
    MAX_CONTENT_LIMIT,
    CHANGE_WINDOW_SETTINGS,
    MAX_CONTENT_SETTING,
    GoimOptions,
    max_content,
    send_budget_settings,
)
from goim.logs import StartupWarning
from goim.protocols.websocket import parse_origins
from goim.standalone import StandaloneConfig, StandaloneService

__all__ = ["MAX_CONTENT_LIMIT", "Options", "makeService", "max_content"]


class Options(GoimOptions):
    """Options of ``twistd goim``."""

    synopsis = "[options]"
    longdesc = "goim standalone server: client TCP listener, HTTP API and storage in one process."
    settings = [
        Setting("tcp", "tcp:50000", endpoint, "client TCP listener (Twisted endpoint string)"),
        Setting("http", "tcp:8080", endpoint, "HTTP API listener (Twisted endpoint string)"),
        Setting("ws", "", optional(endpoint), "extra client WebSocket listener (path /ws); the HTTP listener serves /ws too"),
        Setting("ws-origins", "", parse_origins, "web page origins allowed to open a WebSocket besides the same origin, ORIGIN[,ORIGIN...] or *"),
        Setting("database", "sqlite:goim.db", database_url, "sqlite:PATH or mysql://user:password@host:port/dbname"),
        *CONNECTION_SETTINGS,
        MAX_CONTENT_SETTING,
        *CHANGE_WINDOW_SETTINGS,
        Setting("write-grace", 60.0, positive_float, "seconds a client that does not read what it is sent keeps its connection"),
        *send_budget_settings(),
        Setting(
            "sqlite-synchronous",
            "full",
            choice("full", "normal"),
            "full: every ACKed commit survives power loss; normal: faster, a power cut may lose the last ones",
        ),
        *LOG_SETTINGS,
        *LISTEN_SETTINGS,
        *HTTP_SETTINGS,
        *API_SETTINGS,
        *CHAT_SETTINGS,
    ]

    def check(self) -> None:
        super().check()
        check_chat_settings(self)

    def config(self) -> StandaloneConfig:
        """The parsed options."""
        return self.build_config(StandaloneConfig)


def makeService(options: Options) -> MultiService:
    """Build the standalone server (nothing runs until the reactor starts it)."""
    from twisted.internet import reactor

    service = StandaloneService(options.config(), reactor)
    service.manage_gc = True
    warning = idle_timeout_warning(options["idle-timeout"])
    if warning:
        StartupWarning(warning).setServiceParent(service)
    return service
