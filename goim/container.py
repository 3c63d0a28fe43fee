"""The container of one goim process: every component built once, on first use.

In the image of Synapse's ``HomeServer`` (``synapse/server.py``): each component
has a ``get_<name>`` method that builds it from other components the first time it
is asked for and returns the same object afterwards. Any component can be given
before it is first built (``override``), which is how tests pass ``task.Clock``, a
synchronous pool or a recording delivery port, and how an entry point plugs in the
ports of its topology.

The standalone server, the logic node and the connect node are three ways of
filling a container (``goim.standalone``, ``goim.distributed.nodes``,
``goim.connect.node``); the components they share are built by
``goim.logic.container.LogicContainer``, ``goim.connect.container.ConnectContainer``
and, for the two node kinds, ``goim.distributed.presence.RedisComponents``.
"""

import functools
from typing import Any, Callable, TypeVar

from goim.clock import Clock
from goim.metrics import Metrics

C = TypeVar("C", bound="Container")
T = TypeVar("T")

_BUILDING = object()


def component(build: Callable[[C], T]) -> Callable[[C], T]:
    """Make ``get_<name>(self)`` build its component once and cache it in the container.

    A component that was overridden is returned as given, never built.
    """
    name = build.__name__.removeprefix("get_")

    @functools.wraps(build)
    def get(self: C) -> T:
        found = self._components.get(name)
        if found is _BUILDING:
            raise RuntimeError(f"component {name!r} depends on itself")
        if name not in self._components:
            self._components[name] = _BUILDING
            try:
                built = build(self)
            except BaseException:
                del self._components[name]
                raise
            self._components[name] = built
            return built
        return found  # type: ignore[return-value]

    get.component_name = name  # type: ignore[attr-defined]
    return get


class Container:
    """The components every goim process has: the reactor, its clock and metrics.

    Args:
        config: the process's configuration (its plugin's config dataclass).
        reactor: the reactor, for what needs real networking or threads (listeners,
            the database pool, Redis and PB connections); a ``task.Clock`` or a
            memory reactor in tests.
        clock: the clock every component keeps time with (default: over ``reactor``).
        metrics_role: the role of this process's metrics (``goim.metrics.Metrics``).
        components: components given instead of built, by name (see ``override``).
    """

    #: the process's configuration; subclasses narrow its type
    config: Any

    def __init__(
        self, config: Any, reactor: Any, *, clock: Clock | None = None, metrics_role: str = "standalone", **components: Any
    ) -> None:
        self.config = config
        self.reactor = reactor
        self._components: dict[str, Any] = {}
        self._metrics_role = metrics_role
        if clock is not None:
            components["clock"] = clock
        for name, value in components.items():
            self.override(name, value)

    @classmethod
    def component_names(cls) -> list[str]:
        """The names of every component this container can build."""
        names = []
        for attribute in dir(cls):
            name = getattr(getattr(cls, attribute), "component_name", None)
            if name is not None:
                names.append(name)
        return sorted(names)

    def override(self, name: str, value: Any) -> None:
        """Use ``value`` as component ``name`` instead of building it.

        Raises:
            KeyError: the container has no such component.
            RuntimeError: the component was built (and may be in use) already.
        """
        if name not in self.component_names():
            raise KeyError(f"{type(self).__name__} has no component {name!r}")
        if name in self._components:
            raise RuntimeError(f"component {name!r} was built already")
        self._components[name] = value

    def built(self, name: str) -> bool:
        """Whether component ``name`` exists yet (built or given)."""
        return name in self._components and self._components[name] is not _BUILDING

    @component
    def get_clock(self) -> Clock:
        return Clock(self.reactor)

    @component
    def get_metrics(self) -> Metrics:
        return Metrics(self._metrics_role)
