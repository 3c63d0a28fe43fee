"""``twistd goim``: options and service maker of the standalone server."""

from twisted.application.service import MultiService

from goim.config import (
    ServerOptions,
    Setting,
    choice,
    database_url,
    endpoint,
    idle_timeout_warning,
    positive_float,
    positive_int,
)
from goim.config import optional
from goim.limits import API_SETTINGS, HTTP_SETTINGS, LISTEN_SETTINGS, limits_from_options
from goim.protocols.websocket import parse_origins
from goim.logic.messages import DEFAULT_MAX_CONTENT, DEFAULT_SEND_BURST, DEFAULT_SEND_RATE
from goim.logs import LEVELS, StartupWarning
from goim.standalone import StandaloneConfig, StandaloneService

#: content beyond this cannot fit a 65,535-byte frame with the item's other fields
MAX_CONTENT_LIMIT = 65000


def max_content(value: object) -> int:
    number = positive_int(value)
    if number > MAX_CONTENT_LIMIT:
        raise ValueError(f"must be at most {MAX_CONTENT_LIMIT} bytes")
    return number


class Options(ServerOptions):
    """Options of ``twistd goim``."""

    synopsis = "[options]"
    longdesc = "goim standalone server: client TCP listener, HTTP API and storage in one process."
    settings = [
        Setting("tcp", "tcp:50000", endpoint, "client TCP listener (Twisted endpoint string)"),
        Setting("http", "tcp:8080", endpoint, "HTTP API listener (Twisted endpoint string)"),
        Setting("ws", "", optional(endpoint), "extra client WebSocket listener (path /ws); the HTTP listener serves /ws too"),
        Setting("ws-origins", "", parse_origins, "web page origins allowed to open a WebSocket besides the same origin, ORIGIN[,ORIGIN...] or *"),
        Setting("database", "sqlite:goim.db", database_url, "sqlite:PATH or mysql://user:password@host:port/dbname"),
        Setting("signin-timeout", 10.0, positive_float, "seconds a new connection has to sign in"),
        Setting("idle-timeout", 600.0, positive_float, "seconds a signed-in connection may stay silent"),
        Setting("max-content", DEFAULT_MAX_CONTENT, max_content, "largest message content in UTF-8 bytes"),
        Setting("write-grace", 60.0, positive_float, "seconds a client that does not read what it is sent keeps its connection"),
        Setting("send-rate", DEFAULT_SEND_RATE, positive_float, "stored copies a second each user may send on average"),
        Setting("send-burst", DEFAULT_SEND_BURST, positive_float, "stored copies each user may send at once"),
        Setting(
            "sqlite-synchronous",
            "full",
            choice("full", "normal"),
            "full: every ACKed commit survives power loss; normal: faster, a power cut may lose the last ones",
        ),
        Setting("log-format", "text", choice("text", "json"), "log lines as text or one JSON object per line"),
        Setting("log-level", "info", choice(*LEVELS), "drop goim's log events below this level"),
        *LISTEN_SETTINGS,
        *HTTP_SETTINGS,
        *API_SETTINGS,
    ]

    def config(self) -> StandaloneConfig:
        """The parsed options."""
        return StandaloneConfig(
            tcp=self["tcp"],
            http=self["http"],
            ws=self["ws"],
            ws_origins=self["ws-origins"],
            database=self["database"],
            signin_timeout=self["signin-timeout"],
            idle_timeout=self["idle-timeout"],
            max_content=self["max-content"],
            write_grace=self["write-grace"],
            send_rate=self["send-rate"],
            send_burst=self["send-burst"],
            sqlite_synchronous=self["sqlite-synchronous"],
            log_format=self["log-format"],
            log_level=self["log-level"],
            limits=limits_from_options(self),
        )


def makeService(options: Options) -> MultiService:
    """Build the standalone server (nothing runs until the reactor starts it)."""
    from twisted.internet import reactor

    service = StandaloneService(options.config(), reactor)
    warning = idle_timeout_warning(options["idle-timeout"])
    if warning:
        StartupWarning(warning).setServiceParent(service)
    return service
