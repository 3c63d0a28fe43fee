from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignIn(_message.Message):
    __slots__ = ("device_id", "user_id", "token", "max_frame", "features")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    device_id: int
    user_id: int
    token: str
    max_frame: int
    features: int
    def __init__(self, device_id: _Optional[int] = ..., user_id: _Optional[int] = ..., token: _Optional[str] = ..., max_frame: _Optional[int] = ..., features: _Optional[int] = ...) -> None: ...

class SignInACK(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class SyncTrigger(_message.Message):
    __slots__ = ("sync_sequence",)
    SYNC_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    sync_sequence: int
    def __init__(self, sync_sequence: _Optional[int] = ...) -> None: ...

class MessageSend(_message.Message):
    __slots__ = ("receiver_type", "receiver_id", "type", "content", "send_sequence", "send_time")
    RECEIVER_TYPE_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    SEND_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SEND_TIME_FIELD_NUMBER: _ClassVar[int]
    receiver_type: int
    receiver_id: int
    type: int
    content: str
    send_sequence: int
    send_time: int
    def __init__(self, receiver_type: _Optional[int] = ..., receiver_id: _Optional[int] = ..., type: _Optional[int] = ..., content: _Optional[str] = ..., send_sequence: _Optional[int] = ..., send_time: _Optional[int] = ...) -> None: ...

class MessageSendACK(_message.Message):
    __slots__ = ("send_sequence", "code", "message_id", "sync_sequence", "retry_after_ms")
    SEND_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SYNC_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    send_sequence: int
    code: int
    message_id: int
    sync_sequence: int
    retry_after_ms: int
    def __init__(self, send_sequence: _Optional[int] = ..., code: _Optional[int] = ..., message_id: _Optional[int] = ..., sync_sequence: _Optional[int] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class MessageItem(_message.Message):
    __slots__ = ("message_id", "sender_type", "sender_id", "sender_device_id", "receiver_type", "receiver_id", "type", "content", "sync_sequence", "send_time", "kind", "ref_seq", "edited_at", "recalled")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_TYPE_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_TYPE_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    SYNC_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SEND_TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REF_SEQ_FIELD_NUMBER: _ClassVar[int]
    EDITED_AT_FIELD_NUMBER: _ClassVar[int]
    RECALLED_FIELD_NUMBER: _ClassVar[int]
    message_id: int
    sender_type: int
    sender_id: int
    sender_device_id: int
    receiver_type: int
    receiver_id: int
    type: int
    content: str
    sync_sequence: int
    send_time: int
    kind: int
    ref_seq: int
    edited_at: int
    recalled: bool
    def __init__(self, message_id: _Optional[int] = ..., sender_type: _Optional[int] = ..., sender_id: _Optional[int] = ..., sender_device_id: _Optional[int] = ..., receiver_type: _Optional[int] = ..., receiver_id: _Optional[int] = ..., type: _Optional[int] = ..., content: _Optional[str] = ..., sync_sequence: _Optional[int] = ..., send_time: _Optional[int] = ..., kind: _Optional[int] = ..., ref_seq: _Optional[int] = ..., edited_at: _Optional[int] = ..., recalled: _Optional[bool] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("type", "messages", "more", "trimmed")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    TRIMMED_FIELD_NUMBER: _ClassVar[int]
    type: int
    messages: _containers.RepeatedCompositeFieldContainer[MessageItem]
    more: bool
    trimmed: bool
    def __init__(self, type: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[MessageItem, _Mapping]]] = ..., more: _Optional[bool] = ..., trimmed: _Optional[bool] = ...) -> None: ...

class MessageACK(_message.Message):
    __slots__ = ("message_id", "sync_sequence", "receive_time")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    SYNC_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    message_id: int
    sync_sequence: int
    receive_time: int
    def __init__(self, message_id: _Optional[int] = ..., sync_sequence: _Optional[int] = ..., receive_time: _Optional[int] = ...) -> None: ...

class Kicked(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class ReadReport(_message.Message):
    __slots__ = ("conversation_type", "conversation_id", "sync_sequence", "request_id")
    CONVERSATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_ID_FIELD_NUMBER: _ClassVar[int]
    SYNC_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    conversation_type: int
    conversation_id: int
    sync_sequence: int
    request_id: int
    def __init__(self, conversation_type: _Optional[int] = ..., conversation_id: _Optional[int] = ..., sync_sequence: _Optional[int] = ..., request_id: _Optional[int] = ...) -> None: ...

class Recall(_message.Message):
    __slots__ = ("message_id", "request_id")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: int
    request_id: int
    def __init__(self, message_id: _Optional[int] = ..., request_id: _Optional[int] = ...) -> None: ...

class Edit(_message.Message):
    __slots__ = ("message_id", "content", "request_id")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    message_id: int
    content: str
    request_id: int
    def __init__(self, message_id: _Optional[int] = ..., content: _Optional[str] = ..., request_id: _Optional[int] = ...) -> None: ...

class ChangeACK(_message.Message):
    __slots__ = ("request_id", "code", "message", "read_sequence")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    READ_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    code: int
    message: str
    read_sequence: int
    def __init__(self, request_id: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., read_sequence: _Optional[int] = ...) -> None: ...
