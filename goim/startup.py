"""Why a process could not start, in one line that names the cause and the fix.

A process that cannot start exits non-zero (supervisors such as systemd and
Kubernetes read status 0 as a clean stop) after logging one line built here.
Expected causes get no traceback; anything else is logged with one.
"""

import errno
import sqlite3
from pathlib import Path

from twisted.internet.error import CannotListenError

from goim.distributed.redis import RedisUnavailable
from goim.storage.schema import SchemaTooNewError

#: where Linux keeps the ephemeral port range (outgoing connections' source ports)
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")

# MySQL error numbers of causes an operator fixes
_UNKNOWN_DATABASE = 1049
_ACCESS_DENIED = 1045
_DATABASE_ACCESS_DENIED = 1044
_TABLE_ACCESS_DENIED = 1142
_CANNOT_CONNECT = (2003, 2005, 2013)


class StartFailure(Exception):
    """A cause of a failed start that is already explained for the operator."""


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int] | None:
    """Linux's ephemeral port range, or None where it cannot be read."""
    try:
        low, high = path.read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return None


def explain(error: BaseException, *, endpoint: str = "", database: str = "", redis: str = "") -> str | None:
    """One line naming the cause of a failed start and its fix, or None when the
    error is not one of the expected causes (the caller logs its traceback).

    Args:
        error: what was raised.
        endpoint: the listener's endpoint string, for listen errors.
        database: the database URL (without password), for storage errors.
        redis: the Redis URL (without password), for Redis errors.
    """
    if isinstance(error, StartFailure):
        return str(error)
    if isinstance(error, CannotListenError):
        return _explain_listen(error, endpoint)
    if isinstance(error, SchemaTooNewError):
        return str(error)
    if isinstance(error, RedisUnavailable):
        return f"cannot reach Redis at {redis}: is redis-server running there? (--redis)"
    if isinstance(error, sqlite3.Error):
        return _explain_sqlite(error, database)
    return _explain_mysql(error, database)


def _explain_listen(error: CannotListenError, endpoint: str) -> str:
    port = error.port
    cause = error.socketError
    code = getattr(cause, "errno", None)
    if code == errno.EADDRINUSE:
        line = (
            f"cannot listen on {endpoint}: port {port} is in use; stop what holds it "
            f"(ss -ltnp 'sport = :{port}') or choose another endpoint"
        )
        span = ephemeral_range()
        if span is not None and span[0] <= port <= span[1]:
            line += (
                f"; port {port} lies in Linux's ephemeral range {span[0]}-{span[1]}, where an "
                f"outgoing connection can hold it: reserve it with "
                f"sysctl -w net.ipv4.ip_local_reserved_ports={port} (see docs/operations.md)"
            )
        return line
    if code == errno.EACCES:
        return (
            f"cannot listen on {endpoint}: permission denied (ports below 1024 need root or "
            f"CAP_NET_BIND_SERVICE); choose a port of 1024 or above"
        )
    if code == errno.EADDRNOTAVAIL:
        return f"cannot listen on {endpoint}: the interface address is not on this machine"
    return f"cannot listen on {endpoint}: {cause}"


def _explain_sqlite(error: sqlite3.Error, database: str) -> str:
    path = database.split(":", 1)[1] if database.startswith("sqlite:") else database
    text = str(error)
    if "unable to open" in text:
        return (
            f"cannot open the SQLite file {path!r}: check that its directory exists and that this "
            f"user may write there (--database sqlite:PATH)"
        )
    if "not a database" in text:
        return f"{path!r} is not an SQLite database: point --database at a goim database file or a new path"
    if "readonly" in text or "read-only" in text:
        return f"the SQLite file {path!r} is read-only for this user: fix its permissions"
    return f"cannot use the SQLite database {path!r}: {text}"


def _explain_mysql(error: BaseException, database: str) -> str | None:
    try:
        import pymysql
    except ImportError:  # pragma: no cover - the [mysql] extra is not installed
        return None
    if not isinstance(error, pymysql.err.MySQLError) or not error.args or not isinstance(error.args[0], int):
        return None
    code, text = error.args[0], str(error.args[1]) if len(error.args) > 1 else ""
    name = database.rsplit("/", 1)[-1] if "/" in database else ""
    if code == _UNKNOWN_DATABASE:
        return (
            f"the MySQL database {name!r} does not exist: create it with "
            f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin; "
            f"and grant the user access (docs/operations.md)"
        )
    if code == _ACCESS_DENIED:
        return f"MySQL refused the user and password of {database}: check them in --database ({text})"
    if code in (_DATABASE_ACCESS_DENIED, _TABLE_ACCESS_DENIED):
        return (
            f"the MySQL user of {database} lacks privileges on {name!r}: GRANT ALL ON `{name}`.* "
            f"TO the user (docs/operations.md) ({text})"
        )
    if code in _CANNOT_CONNECT:
        return f"cannot reach MySQL for {database}: is the server running and reachable? ({text})"
    return f"MySQL error {code} on {database}: {text}"
