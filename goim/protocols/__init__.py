"""Wire-level code: TLV framing, protobuf codec and the client connection protocol."""
