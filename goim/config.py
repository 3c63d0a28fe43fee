"""Command-line options with an optional TOML file, shared by the three twistd plugins.

Precedence: a flag given on the command line, then the same key in the file named
by ``--config``, then the built-in default. A bad value is a ``UsageError`` that
names the option (and the file), never a traceback.

Each option is declared once (a :class:`Setting`; the declarations several plugins
share are in ``goim.limits``) and names the field of the plugin's config dataclass
it fills: ``ServerOptions.build_config`` derives the config from the declarations.
Pure: no storage, no Redis, no reactor.
"""

import tomllib
from dataclasses import dataclass, fields
from typing import Any, Callable, TypeVar

from twisted.internet import endpoints
from twisted.python import usage

from goim.urls import DatabaseURLError, RedisURL, RedisURLError, parse_database_url

T = TypeVar("T")


#: goim 1.1 clients send a heartbeat every 240 s (docs/protocol.md section 3)
GOIM11_HEARTBEAT = 240.0
#: room for a late heartbeat (a slow network, a busy client)
IDLE_MARGIN = 30.0


def idle_timeout_warning(idle_timeout: float) -> str | None:
    """The start-up warning for an idle timeout goim 1.1 clients cannot keep, or None."""
    if idle_timeout > GOIM11_HEARTBEAT + IDLE_MARGIN:
        return None
    return (
        f"idle-timeout {idle_timeout:g} s is not above goim 1.1 clients' {GOIM11_HEARTBEAT:g} s heartbeat "
        f"plus a {IDLE_MARGIN:g} s margin: such clients will be disconnected while idle; "
        f"set --idle-timeout above {GOIM11_HEARTBEAT + IDLE_MARGIN:g} (default 600)"
    )


@dataclass(frozen=True)
class Setting:
    """One option: its flag name, default, parser and help text, and the config
    field it fills."""

    name: str
    default: Any
    parse: Callable[[Any], Any]
    doc: str
    #: the config dataclass field this option fills; None: the name with "_" for
    #: "-"; "": none (the option feeds a derived value such as ``limits``)
    field: str | None = None

    @property
    def field_name(self) -> str:
        """The config field this option fills ("" for none)."""
        return self.name.replace("-", "_") if self.field is None else self.field


class _NoReactor:
    """Stands in for the reactor while an endpoint string is parsed: parsing builds
    an endpoint object and never calls its reactor."""


def endpoint(value: Any) -> str:
    """A Twisted server endpoint string such as ``tcp:50000`` or ``tcp:8080:interface=127.0.0.1``."""
    text = str(value)
    try:
        endpoints.serverFromString(_NoReactor(), text)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"not a server endpoint string ({e})") from None
    return text


def positive_float(value: Any) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be positive")
    return number


def positive_int(value: Any) -> int:
    if isinstance(value, float) or isinstance(value, bool):
        raise ValueError("must be a whole number")
    number = int(value)
    if number <= 0:
        raise ValueError("must be positive")
    return number


def choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value)
        if text not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return text

    return parse


def database_url(value: Any) -> str:
    text = str(value)
    try:
        parse_database_url(text)
    except DatabaseURLError as e:
        raise ValueError(str(e)) from None
    return text


def text(value: Any) -> str:
    return str(value)


def required(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``parse``, for an option that has no default."""

    def parse_required(value: Any) -> Any:
        if value is None or value == "":
            raise ValueError("is required")
        return parse(value)

    return parse_required


def optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``parse``, for an option whose empty value means "none"."""

    def parse_optional(value: Any) -> Any:
        return "" if value in (None, "") else parse(value)

    return parse_optional


def secret_file(value: Any) -> bytes:
    """The shared secret, read from a file (surrounding white space removed)."""
    try:
        with open(str(value), "rb") as f:
            secret = f.read().strip()
    except OSError as e:
        raise ValueError(f"cannot read the secret file: {e.strerror}") from None
    if len(secret) < 16:
        raise ValueError("the shared secret must have at least 16 characters")
    return secret


def redis_url(value: Any) -> str:
    text = str(value)
    try:
        RedisURL.parse(text)
    except RedisURLError as e:
        raise ValueError(str(e)) from None
    return text


def node_id(value: Any) -> str:
    """A node id: letters, digits, dot, dash and underscore (it names Redis keys)."""
    text = str(value)
    if not text or len(text) > 64 or not all(c.isalnum() or c in "._-" for c in text):
        raise ValueError("use 1-64 letters, digits, '.', '-' or '_'")
    return text


def host_ports(value: Any) -> tuple[str, ...]:
    """``HOST:PORT[,HOST:PORT...]``."""
    items = value if isinstance(value, list) else str(value).split(",")
    addresses = []
    for item in items:
        host, _, port = str(item).strip().rpartition(":")
        host = host.removeprefix("[").removesuffix("]")  # [::1]:50100
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not HOST:PORT")
        addresses.append(f"{host}:{port}")
    if not addresses:
        raise ValueError("name at least one HOST:PORT")
    return tuple(addresses)


class ServerOptions(usage.Options):
    """Options built from ``settings``; after parsing, ``self[name]`` holds parsed values."""

    settings: list[Setting] = []
    optParameters: list[list[Any]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # usage.Options reads optParameters from the class; every option defaults
        # to None here so that postOptions can tell a given flag from an absent one.
        super().__init_subclass__(**kwargs)
        cls.optParameters = [
            ["config", None, None, "TOML file with the same keys as these options (flags win)"],
            *[[s.name, None, None, s.doc if s.default is None else f"{s.doc} [default: {s.default}]"] for s in cls.settings],
        ]

    def opt_version(self) -> None:
        """Print the goim version and exit."""
        from twisted import __version__ as twisted_version

        from goim import __version__

        print(f"goim {__version__} (Twisted {twisted_version})")
        raise SystemExit(0)

    def postOptions(self) -> None:
        from_file = self._read_config_file()
        for s in self.settings:
            raw = self[s.name]
            where = f"--{s.name}"
            if raw is None and s.name in from_file:
                raw = from_file[s.name]
                where = f"{s.name} in {self['config']}"
            if raw is None:
                raw = s.default
            try:
                self[s.name] = s.parse(raw)
            except (ValueError, TypeError) as e:
                raise usage.UsageError(f"{where}: {raw!r} is not valid: {e}") from None
        self.check()

    def check(self) -> None:
        """Cross-checks between options; raise ``UsageError``."""

    def derived(self) -> dict[str, Any]:
        """Config fields computed from several options (after parsing)."""
        return {}

    def build_config(self, config_class: type[T]) -> T:
        """The parsed options as a ``config_class`` dataclass: each setting fills the
        field it names, ``derived`` the rest; fields no option fills keep their defaults.

        Raises:
            TypeError: a setting names a field ``config_class`` does not have.
        """
        known = {f.name for f in fields(config_class)}  # type: ignore[arg-type]
        values = {s.field_name: self[s.name] for s in self.settings if s.field_name}
        values.update(self.derived())
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"{config_class.__name__} has no field for {', '.join(unknown)}")
        return config_class(**values)

    def _read_config_file(self) -> dict[str, Any]:
        path = self["config"]
        if not path:
            return {}
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise usage.UsageError(f"--config: cannot read {path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise usage.UsageError(f"--config: {path} is not valid TOML: {e}") from None
        known = {s.name for s in self.settings}
        values = {}
        for key, value in data.items():
            name = key.replace("_", "-")
            if name not in known:
                raise usage.UsageError(f"--config: {path}: unknown key {key!r} (known: {', '.join(sorted(known))})")
            values[name] = value
        return values
