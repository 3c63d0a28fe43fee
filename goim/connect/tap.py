"""``twistd goim-connect``: options and service maker of a connect node."""

from twisted.application.service import MultiService

from goim.config import (
    ServerOptions,
    Setting,
    choice,
    endpoint,
    host_ports,
    idle_timeout_warning,
    node_id,
    optional,
    positive_float,
    redis_url,
    required,
    secret_file,
    text,
)
from goim.protocols.websocket import parse_origins
from goim.connect.node import ConnectNodeConfig, ConnectNodeService
from goim.limits import HTTP_SETTINGS, LISTEN_SETTINGS, limits_from_options
from goim.logs import LEVELS, StartupWarning


class Options(ServerOptions):
    """Options of ``twistd goim-connect``."""

    synopsis = "--node-id ID --secret-file PATH [options]"
    longdesc = "goim connect node: client TCP connections, PB to logic nodes, deliveries from Redis."
    settings = [
        Setting("tcp", "tcp:50000", endpoint, "client TCP listener (Twisted endpoint string)"),
        Setting("ws", "", optional(endpoint), "client WebSocket listener (path /ws); empty for none"),
        Setting("ws-origins", "", parse_origins, "web page origins allowed to open a WebSocket besides the same origin, ORIGIN[,ORIGIN...] or *"),
        Setting("http", "", optional(endpoint), "listener for /healthz and /metrics; empty for none"),
        Setting("logic", "127.0.0.1:50100", host_ports, "logic nodes' PB addresses, HOST:PORT[,HOST:PORT...]"),
        Setting("redis", "redis://127.0.0.1:6379/0", redis_url, "Redis URL"),
        Setting("redis-prefix", "goim:", text, "prefix of every Redis key and channel"),
        Setting("secret-file", None, required(secret_file), "file holding the secret shared with logic nodes"),
        Setting("node-id", None, required(node_id), "this node's id, unique among connect nodes (required)"),
        Setting("signin-timeout", 10.0, positive_float, "seconds a new connection has to sign in"),
        Setting("idle-timeout", 600.0, positive_float, "seconds a signed-in connection may stay silent"),
        Setting("log-format", "text", choice("text", "json"), "log lines as text or one JSON object per line"),
        Setting("log-level", "info", choice(*LEVELS), "drop goim's log events below this level"),
        *LISTEN_SETTINGS,
        *HTTP_SETTINGS,
    ]

    def config(self) -> ConnectNodeConfig:
        """The parsed options."""
        return ConnectNodeConfig(
            node_id=self["node-id"],
            secret=self["secret-file"],
            logic=self["logic"],
            tcp=self["tcp"],
            ws=self["ws"],
            ws_origins=self["ws-origins"],
            redis=self["redis"],
            redis_prefix=self["redis-prefix"],
            signin_timeout=self["signin-timeout"],
            idle_timeout=self["idle-timeout"],
            http=self["http"],
            log_format=self["log-format"],
            log_level=self["log-level"],
            limits=limits_from_options(self),
        )


def makeService(options: Options) -> MultiService:
    """Build a connect node (nothing runs until the reactor starts it)."""
    from twisted.internet import reactor

    service = ConnectNodeService(options.config(), reactor)
    warning = idle_timeout_warning(options["idle-timeout"])
    if warning:
        StartupWarning(warning).setServiceParent(service)
    return service
