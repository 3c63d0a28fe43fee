"""The option declarations the twistd plugins share, and the limits of one process.

One ``Limits`` value carries every limit of issue 11 that the operator can set:
social limits, account throttles and token lifetime, HTTP guards and the listen
backlog. The settings below are declared once and listed by each plugin that takes
them (``goim.tap``, ``goim.distributed.logic_tap``, ``goim.connect.tap``);
``GoimOptions`` derives a plugin's config dataclass from them, ``limits`` included.
"""

from dataclasses import dataclass, field
from typing import Any

from goim.config import ServerOptions, Setting, choice, positive_float, positive_int
from goim.logic.accounts import AccountLimits
from goim.logic.messages import DEFAULT_MAX_CONTENT, DEFAULT_SEND_BURST, DEFAULT_SEND_RATE
from goim.logic.social import SocialLimits
from goim.logs import LEVELS
from goim.resources.http import HTTPLimits

#: a listen backlog well above the default of 50: bursts of reconnecting clients
DEFAULT_BACKLOG = 1024

#: endpoint types whose strings take a ``backlog=`` parameter
_BACKLOG_ENDPOINTS = ("tcp:", "tcp6:", "ssl:", "unix:")


@dataclass(frozen=True)
class Limits:
    """Every operator-settable abuse limit of one process."""

    social: SocialLimits = field(default_factory=SocialLimits)
    accounts: AccountLimits = field(default_factory=AccountLimits)
    http: HTTPLimits = field(default_factory=HTTPLimits)
    backlog: int = DEFAULT_BACKLOG


def with_backlog(description: str, backlog: int) -> str:
    """The endpoint string with ``backlog=`` added (unless it names one already).

    >>> with_backlog("tcp:8080:interface=127.0.0.1", 1024)
    'tcp:8080:interface=127.0.0.1:backlog=1024'
    """
    if not description.startswith(_BACKLOG_ENDPOINTS) or "backlog=" in description:
        return description
    return f"{description}:backlog={backlog}"


def non_negative_float(value: Any) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("must be zero or positive")
    return number


#: the listen backlog, for every plugin
LISTEN_SETTINGS = [
    Setting("listen-backlog", DEFAULT_BACKLOG, positive_int, "listen backlog of every listener (the kernel caps it at net.core.somaxconn)", field=""),
]

def default_max_connections() -> int:
    """4,096, or half the process's descriptor limit when that is lower.

    The other half stays for client connections, the database and log files, so
    that HTTP clients alone can never exhaust the descriptors.
    """
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 4096
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 4096
    return max(16, min(4096, soft // 2))


#: HTTP guards, for every plugin that serves HTTP
HTTP_SETTINGS = [
    Setting("http-header-timeout", 10.0, positive_float, "seconds a client has to send a request's headers, total, not per byte (then HTTP 408)", field=""),
    Setting("http-body-timeout", 30.0, positive_float, "seconds a client has to send a request's body after its headers (then HTTP 408)", field=""),
    Setting("http-max-connections", default_max_connections(), positive_int, "concurrent HTTP connections overall (more: HTTP 503)", field=""),
    Setting("http-max-connections-per-address", 64, positive_int, "concurrent HTTP connections per client address, IPv6 per /64 (more: HTTP 503)", field=""),
]

#: social and account limits, for the plugins that serve the API
API_SETTINGS = [
    Setting("max-group-size", 500, positive_int, "members of one group; every group message is stored once per member (over it: API code 1008)", field=""),
    Setting("max-groups-per-user", 200, positive_int, "groups one user may be a member of (API code 1009)", field=""),
    Setting("max-friends-per-user", 1000, positive_int, "friends one user may have (API code 1010)", field=""),
    Setting("max-devices-per-user", 10, positive_int, "devices bound to one user at a time (API code 1011)", field=""),
    Setting("signin-backoff-max", 300.0, positive_float, "longest back-off in seconds after failed password sign-ins (API code 1012, HTTP 429)", field=""),
    Setting("device-registrations-per-minute", 10.0, positive_float, "device registrations per client address and minute, bursts of twice that (API code 1013, HTTP 429)", field=""),
    Setting("token-lifetime", 0.0, non_negative_float, "seconds a device token lives, refreshed by POST /device/token (expired: API code 1014); 0: forever", field=""),
]


def limits_from_options(options: Any) -> Limits:
    """The ``Limits`` of parsed options; settings a plugin lacks keep their defaults."""

    def get(name: str, default: Any) -> Any:
        try:
            value = options[name]
        except KeyError:
            return default
        return default if value is None else value

    social = SocialLimits(
        group_size=get("max-group-size", SocialLimits.group_size),
        groups_per_user=get("max-groups-per-user", SocialLimits.groups_per_user),
        friends_per_user=get("max-friends-per-user", SocialLimits.friends_per_user),
    )
    per_minute = get("device-registrations-per-minute", AccountLimits.registrations_per_minute)
    accounts = AccountLimits(
        devices_per_user=get("max-devices-per-user", AccountLimits.devices_per_user),
        sign_in_backoff_max=get("signin-backoff-max", AccountLimits.sign_in_backoff_max),
        registrations_per_minute=per_minute,
        registration_burst=max(1, int(2 * per_minute)),
        token_lifetime=get("token-lifetime", AccountLimits.token_lifetime),
    )
    http = HTTPLimits(
        header_timeout=get("http-header-timeout", HTTPLimits.header_timeout),
        body_timeout=get("http-body-timeout", HTTPLimits.body_timeout),
        max_connections=get("http-max-connections", default_max_connections()),
        max_connections_per_address=get("http-max-connections-per-address", HTTPLimits.max_connections_per_address),
    )
    return Limits(social=social, accounts=accounts, http=http, backlog=get("listen-backlog", DEFAULT_BACKLOG))


#: content beyond this cannot fit a 65,535-byte frame with the item's other fields
MAX_CONTENT_LIMIT = 65000


def max_content(value: object) -> int:
    number = positive_int(value)
    if number > MAX_CONTENT_LIMIT:
        raise ValueError(f"must be at most {MAX_CONTENT_LIMIT} bytes")
    return number


#: log output, for every plugin
LOG_SETTINGS = [
    Setting("log-format", "text", choice("text", "json"), "log lines as text or one JSON object per line"),
    Setting("log-level", "info", choice(*LEVELS), "drop goim's log events below this level"),
]

#: the timers of client connections, for the plugins that take them
CONNECTION_SETTINGS = [
    Setting("signin-timeout", 10.0, positive_float, "seconds a new connection has to sign in"),
    Setting("idle-timeout", 600.0, positive_float, "seconds a signed-in connection may stay silent"),
]

#: the largest message, for the plugins that store messages
MAX_CONTENT_SETTING = Setting("max-content", DEFAULT_MAX_CONTENT, max_content, "largest message content in UTF-8 bytes")


def send_budget_settings(scope: str = "") -> list[Setting]:
    """The per-user send budget, for the plugins that store messages.

    Args:
        scope: appended to the help texts (a logic node's budget is per node).
    """
    return [
        Setting("send-rate", DEFAULT_SEND_RATE, positive_float, f"stored copies a second each user may send on average{scope}"),
        Setting("send-burst", DEFAULT_SEND_BURST, positive_float, f"stored copies each user may send at once{scope}"),
    ]


#: how long after sending a message may be changed (issue 14), for the plugins that store messages
CHANGE_WINDOW_SETTINGS = [
    Setting("recall-window", 120.0, positive_float, "seconds after sending within which the sender may recall a message (API code 1018 after)"),
    Setting("edit-window", 900.0, positive_float, "seconds after sending within which the sender may edit a message (API code 1018 after)"),
]


class GoimOptions(ServerOptions):
    """The options of a goim plugin: the config carries the ``Limits`` too."""

    def derived(self) -> dict[str, Any]:
        return {"limits": limits_from_options(self)}
