# Minimal type stubs for the parts of txredisapi goim uses (the library ships none).
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory

class ConnectionError(Exception): ...
class ResponseError(Exception): ...
class TimeoutError(Exception): ...

class RedisProtocol:
    factory: Any
    transport: Any
    password: str | None
    username: str | None
    dbid: int | None
    connected: int
    _ready: bool
    _waiting_for_connect: list[Deferred[Any]]
    def __init__(
        self,
        charset: str | None = ...,
        errors: str = ...,
        replyTimeout: float | None = ...,
        password: str | None = ...,
        dbid: int | None = ...,
        convertNumbers: bool = ...,
        username: str | None = ...,
    ) -> None: ...
    def connectionMade(self) -> Deferred[Any]: ...
    def connectionLost(self, why: Any) -> None: ...
    def whenConnected(self) -> Deferred[Any]: ...
    def execute_command(self, *args: Any, **kwargs: Any) -> Deferred[Any]: ...
    def auth(self, password: str, username: str | None = ...) -> Deferred[Any]: ...
    def select(self, index: int) -> Deferred[Any]: ...

class SubscriberProtocol(RedisProtocol):
    def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None: ...
    def subscribe(self, channels: str | list[str]) -> Deferred[Any]: ...
    def unsubscribe(self, channels: str | list[str]) -> Deferred[Any]: ...

class RedisFactory(Factory):
    protocol: Any
    charset: str | None
    password: str | None
    initialDelay: float
    maxDelay: float
    stopped: bool
    handler: ConnectionHandler
    def __init__(
        self,
        uuid: str,
        dbid: int | None,
        poolsize: int,
        isLazy: bool = ...,
        handler: Any = ...,
        charset: str | None = ...,
        password: str | None = ...,
        replyTimeout: float | None = ...,
        convertNumbers: bool = ...,
        username: str | None = ...,
    ) -> None: ...
    def startConnecting(self, endpoint: Any) -> None: ...
    def disconnect(self) -> Deferred[Any]: ...
    def stopTrying(self) -> Deferred[Any]: ...

class SubscriberFactory(RedisFactory):
    def __init__(self, isLazy: bool = ..., handler: Any = ...) -> None: ...

class ConnectionHandler:
    def disconnect(self) -> Deferred[Any]: ...
    def __getattr__(self, name: str) -> Any: ...

def lazyConnectionPool(
    host: str = ...,
    port: int = ...,
    dbid: int | None = ...,
    poolsize: int = ...,
    reconnect: bool = ...,
    charset: str | None = ...,
    password: str | None = ...,
    ssl_context_factory: Any = ...,
    connectTimeout: float | None = ...,
    replyTimeout: float | None = ...,
    convertNumbers: bool = ...,
    username: str | None = ...,
) -> ConnectionHandler: ...
