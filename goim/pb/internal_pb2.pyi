from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeEvent(_message.Message):
    __slots__ = ("deliveries", "kicks")
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    KICKS_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    kicks: _containers.RepeatedCompositeFieldContainer[Kick]
    def __init__(self, deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ..., kicks: _Optional[_Iterable[_Union[Kick, _Mapping]]] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("user_id", "device_ids", "items", "seqs", "audiences")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SEQS_FIELD_NUMBER: _ClassVar[int]
    AUDIENCES_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    device_ids: _containers.RepeatedScalarFieldContainer[int]
    items: _containers.RepeatedScalarFieldContainer[bytes]
    seqs: _containers.RepeatedScalarFieldContainer[int]
    audiences: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, user_id: _Optional[int] = ..., device_ids: _Optional[_Iterable[int]] = ..., items: _Optional[_Iterable[bytes]] = ..., seqs: _Optional[_Iterable[int]] = ..., audiences: _Optional[_Iterable[int]] = ...) -> None: ...

class Kick(_message.Message):
    __slots__ = ("device_id", "reason", "new_node", "conn")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NEW_NODE_FIELD_NUMBER: _ClassVar[int]
    CONN_FIELD_NUMBER: _ClassVar[int]
    device_id: int
    reason: str
    new_node: str
    conn: str
    def __init__(self, device_id: _Optional[int] = ..., reason: _Optional[str] = ..., new_node: _Optional[str] = ..., conn: _Optional[str] = ...) -> None: ...

class SendBatch(_message.Message):
    __slots__ = ("sends",)
    SENDS_FIELD_NUMBER: _ClassVar[int]
    sends: _containers.RepeatedCompositeFieldContainer[BatchedSend]
    def __init__(self, sends: _Optional[_Iterable[_Union[BatchedSend, _Mapping]]] = ...) -> None: ...

class BatchedSend(_message.Message):
    __slots__ = ("conn", "device_id", "user_id", "message")
    CONN_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    conn: str
    device_id: int
    user_id: int
    message: bytes
    def __init__(self, conn: _Optional[str] = ..., device_id: _Optional[int] = ..., user_id: _Optional[int] = ..., message: _Optional[bytes] = ...) -> None: ...

class SendResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SendOutcome]
    def __init__(self, results: _Optional[_Iterable[_Union[SendOutcome, _Mapping]]] = ...) -> None: ...

class SendOutcome(_message.Message):
    __slots__ = ("code", "message_id", "seq", "retry_after_ms")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message_id: int
    seq: int
    retry_after_ms: int
    def __init__(self, code: _Optional[int] = ..., message_id: _Optional[int] = ..., seq: _Optional[int] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class AckBatch(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[BatchedAck]
    def __init__(self, acks: _Optional[_Iterable[_Union[BatchedAck, _Mapping]]] = ...) -> None: ...

class BatchedAck(_message.Message):
    __slots__ = ("conn", "device_id", "user_id", "seq")
    CONN_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    conn: str
    device_id: int
    user_id: int
    seq: int
    def __init__(self, conn: _Optional[str] = ..., device_id: _Optional[int] = ..., user_id: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...
