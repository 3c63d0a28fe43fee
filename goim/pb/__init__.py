"""Generated protobuf code for the client wire protocol (see proto/goim.proto)."""
