"""The single exception type of the wire layer."""


class ProtocolError(Exception):
    """A message breaks the wire protocol (docs/PROTOCOL.md); the text names the problem.

    ``decode`` and ``recv_message`` raise nothing else for bad bytes, so a receive loop can
    count and drop a bad message with one ``except ProtocolError`` and keep serving.
    ``encode`` raises it too when a message could not be decoded by a conforming receiver.
    """
