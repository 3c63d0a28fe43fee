"""Database and Redis URLs, parsed without opening anything.

Pure: the options (``goim.config``) validate URLs with these functions without
importing storage or a Redis client; ``goim.storage.database.DatabaseURL`` and the
Redis adapter build on them.
"""

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit


class DatabaseURLError(ValueError):
    """A database URL that goim cannot use."""


@dataclass(frozen=True)
class DatabaseAddress:
    """A parsed ``sqlite:PATH`` or ``mysql://user:password@host:port/dbname`` URL."""

    #: "sqlite" or "mysql"
    scheme: str
    #: the keyword arguments of the DB-API ``connect``
    connect_kwargs: dict[str, Any]

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite backend."""
        return self.scheme == "sqlite"


def parse_database_url(url: str) -> DatabaseAddress:
    """Parse a database URL.

    Raises:
        DatabaseURLError: the URL has an unknown scheme or misses a part.
    """
    if url.startswith("sqlite:"):
        path = url[len("sqlite:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise DatabaseURLError(f"{url!r}: sqlite URLs need a path, e.g. sqlite:goim.db")
        return DatabaseAddress("sqlite", {"database": path, "check_same_thread": False})
    if url.startswith("mysql://"):
        parts = urlsplit(url)
        dbname = parts.path.lstrip("/")
        if not parts.hostname or not dbname:
            raise DatabaseURLError(f"{url!r}: expected mysql://user:password@host:port/dbname")
        try:
            port = parts.port or 3306
        except ValueError as e:
            raise DatabaseURLError(f"{url!r}: bad port") from e
        return DatabaseAddress(
            "mysql",
            {
                "host": parts.hostname,
                "port": port,
                "user": unquote(parts.username or "root"),
                "password": unquote(parts.password or ""),
                "database": dbname,
            },
        )
    raise DatabaseURLError(f"{url!r}: the database URL must start with sqlite: or mysql://")


class RedisURLError(ValueError):
    """A Redis URL goim cannot use."""


@dataclass(frozen=True)
class RedisURL:
    """``redis://[:password@]host[:port][/db]``."""

    host: str
    port: int = 6379
    db: int = 0
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> "RedisURL":
        """Parse a Redis URL.

        Raises:
            RedisURLError: not a redis:// URL, or a bad port or database number.
        """
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            raise RedisURLError(f"{url!r}: expected redis://host:port/db")
        try:
            port = parts.port or 6379
            db = int(parts.path.lstrip("/") or 0)
        except ValueError:
            raise RedisURLError(f"{url!r}: bad port or database number") from None
        if db < 0:
            raise RedisURLError(f"{url!r}: the database number must be 0 or more")
        password = unquote(parts.password) if parts.password else None
        return cls(parts.hostname, port, db, password)
