"""``twistd goim-connect``: options and service maker of a connect node."""

from twisted.application.service import MultiService

from goim.config import (
    Setting,
    endpoint,
    host_ports,
    idle_timeout_warning,
    node_id,
    optional,
    redis_url,
    required,
    secret_file,
    text,
)
from goim.connect.node import ConnectNodeConfig, ConnectNodeService
from goim.limits import CONNECTION_SETTINGS, HTTP_SETTINGS, LISTEN_SETTINGS, LOG_SETTINGS, GoimOptions
from goim.logs import StartupWarning
from goim.protocols.websocket import parse_origins


class Options(GoimOptions):
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
        Setting("secret-file", None, required(secret_file), "file holding the secret shared with logic nodes", field="secret"),
        Setting("node-id", None, required(node_id), "this node's id, unique among connect nodes (required)"),
        *CONNECTION_SETTINGS,
        *LOG_SETTINGS,
        *LISTEN_SETTINGS,
        *HTTP_SETTINGS,
    ]

    def config(self) -> ConnectNodeConfig:
        """The parsed options."""
        return self.build_config(ConnectNodeConfig)


def makeService(options: Options) -> MultiService:
    """Build a connect node (nothing runs until the reactor starts it)."""
    from twisted.internet import reactor

    service = ConnectNodeService(options.config(), reactor)
    service.manage_gc = True
    warning = idle_timeout_warning(options["idle-timeout"])
    if warning:
        StartupWarning(warning).setServiceParent(service)
    return service
