"""The MTA's side of the milter protocol, for the tests: what Postfix sends a milter, over a
real TCP connection, with the replies read back (the wire format is kilter.protocol's)."""

from __future__ import annotations

import socket
from ipaddress import ip_address
from typing import Any

from kilter.protocol.buffer import SimpleBuffer
from kilter.protocol.core import NR_FLAG_MAP
from kilter.protocol.messages import (
    Abort,
    ActionFlags,
    Body,
    Close,
    Connect,
    Data,
    EndOfHeaders,
    EndOfMessage,
    EnvelopeFrom,
    EnvelopeRecipient,
    Header,
    Helo,
    Macro,
    Message,
    Negotiate,
    ProtocolFlags,
    ReplyCode,
)

__all__ = ["POSTFIX_PROTOCOL", "MilterClient", "reply_text"]

# What Postfix 3.7 offers a milter (milter_protocol = 6).
POSTFIX_ACTIONS = ActionFlags(0x1FF)
POSTFIX_PROTOCOL = ProtocolFlags(0x1FFFFF) & ~(ProtocolFlags.MDS_256K | ProtocolFlags.MDS_1M)


def reply_text(message: Message) -> str:
    """The SMTP reply a ReplyCode carries."""
    assert isinstance(message, ReplyCode)
    return bytes(message.content).rstrip(b"\0").decode("ascii")


class MilterClient:
    """One MTA connection to a milter; each call sends one event and returns the answers
    (modifications first, the verdict last), or [] where the milter asked not to answer."""

    def __init__(
        self, port: int, *, leading_space: bool = True, offer: ProtocolFlags = POSTFIX_PROTOCOL
    ) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.answered: list[str] = []  # the events the milter answered, in order
        self.buffer = SimpleBuffer(4 * 1024 * 1024)
        if not leading_space:
            offer &= ~ProtocolFlags.HDR_LEADSPC
        [answer] = self.send(Negotiate(6, POSTFIX_ACTIONS, offer))
        assert isinstance(answer, Negotiate)
        self.negotiated = answer

    def send(self, message: Message, *, answered: bool = True) -> list[Message]:
        out = SimpleBuffer(4 * 1024 * 1024)
        message.pack(out)
        self.sock.sendall(out[:].tobytes())
        if not answered or self._no_reply(message):
            return []
        self.answered.append(type(message).__name__)
        answers: list[Message] = []
        while True:
            answer = self._read()
            answers.append(answer)
            if type(answer).__name__ not in ("AddHeader", "ChangeHeader", "InsertHeader"):
                return answers

    def _no_reply(self, message: Message) -> bool:
        """The milter asked for no reply to this event (the NR flags it negotiated)."""
        flags = self.negotiated.protocol_flags if hasattr(self, "negotiated") else ProtocolFlags(0)
        flag = NR_FLAG_MAP.get(message.ident)
        return flag is not None and flag in flags

    def _read(self) -> Message:
        while True:
            try:
                message, size = Message.unpack(self.buffer)
            except Exception as exc:  # NeedsMore
                if type(exc).__name__ != "NeedsMore":
                    raise
            else:
                message.freeze()
                del self.buffer[:size]
                return message
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the milter closed the connection")
            self.buffer[:] = data

    # -- the events, as Postfix sends them ----------------------------------------------------

    def connect(self, ip: str = "203.0.113.7", hostname: str = "mx.client.example") -> list[Any]:
        self.send(Macro(ord("C"), {"j": "mx.lamdong.gov.vn"}), answered=False)
        return self.send(Connect(hostname, ip_address(ip), 40000))

    def helo(self, name: str = "mx.client.example") -> list[Any]:
        return self.send(Helo(name))

    def mail(self, sender: str, *, login: str = "", args: tuple[str, ...] = ()) -> list[Any]:
        macros = {"{auth_authen}": login, "{auth_type}": "PLAIN"} if login else {}
        self.send(Macro(ord("M"), macros), answered=False)
        return self.send(EnvelopeFrom(f"<{sender}>".encode(), [a.encode() for a in args]))

    def rcpt(self, address: str) -> list[Any]:
        return self.send(EnvelopeRecipient(f"<{address}>".encode()))

    def message(self, raw: bytes, *, chunk: int = 65535) -> list[Any]:
        """DATA (unless the milter asked not to hear it), each header field, the end of the
        header, the body in chunks, the end."""
        if ProtocolFlags.NO_DATA not in self.negotiated.protocol_flags:
            self.send(Data())
        head, _, body = raw.partition(b"\r\n\r\n")
        fields: list[list[bytes]] = []
        for line in head.split(b"\r\n"):
            if line[:1] in (b" ", b"\t") and fields:
                fields[-1].append(line)
            else:
                fields.append([line])
        leading = ProtocolFlags.HDR_LEADSPC in self.negotiated.protocol_flags
        for field in fields:
            name, _, value = b"\r\n".join(field).partition(b":")
            value = value.replace(b"\r\n", b"\n")
            self.send(Header(name.decode(), value if leading else value.lstrip(b" ")))
        self.send(EndOfHeaders())
        for start in range(0, len(body), chunk):
            self.send(Body(body[start : start + chunk]))
        return self.send(EndOfMessage(b""))

    def abort(self) -> None:
        self.send(Abort(), answered=False)

    def close(self) -> None:
        self.send(Close(), answered=False)
        self.sock.close()
