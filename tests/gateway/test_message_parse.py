"""The MIME tree the checks read: the shortcut for one-part messages must build exactly the
tree the standard library's parser builds, or attachments and printed addresses would be
judged on something other than what the recipient's client shows."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import gzip
from email.message import Message
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.message import _single_part, file_parts, mime_tree

HEADERS = st.sampled_from(
    [
        b"From: a@dilinh.lamdong.gov.vn",
        b"Subject: =?utf-8?b?QsOhbyBjw6Fv?=",
        b"Content-Type: text/plain; charset=utf-8",
        b"Content-Type: application/pdf; name=cv.pdf",
        b"Content-Type: multipart/mixed; boundary=B",
        b"Content-Type: message/rfc822",
        b"Content-Type: text/plain; name*0=a; name*=b",
        b"Content-Disposition: attachment; filename=a.pdf",
        b"Content-Transfer-Encoding: base64",
        b" continued",
        b"\tcontinued",
        b"not a header line",
        b"From nobody",
        b"X-\xff: \xfe",
        b"",
    ]
)
BODY = st.sampled_from(
    [b"", b"text", b"--B", b"--B--", b"Content-Type: text/plain", b"QUJD", b".", b"\xff\x00"]
)
ENDS = st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r"])


def shape(message: Message) -> Any:
    payload = message._payload  # as parsed: get_payload() would re-decode 8-bit text
    return (
        message.get_unixfrom(),
        message.items(),
        [type(d).__name__ for d in message.defects],
        message.preamble,
        message.epilogue,
        [shape(p) for p in payload] if isinstance(payload, list) else payload,
    )


@settings(max_examples=500)
@given(
    st.lists(st.tuples(HEADERS, ENDS), max_size=8),
    st.lists(st.tuples(BODY, ENDS), max_size=8),
    ENDS,
)
def test_a_one_part_message_gets_the_tree_the_full_parser_gives(
    head: list[tuple[bytes, bytes]], body: list[tuple[bytes, bytes]], blank: bytes
) -> None:
    raw = b"".join(h + e for h, e in head) + blank + b"".join(b + e for b, e in body)
    parser = email.parser.BytesParser(policy=email.policy.compat32)
    try:
        full = parser.parsebytes(raw)
    except (TypeError, ValueError, LookupError, IndexError, AttributeError):
        assert mime_tree(raw) is None
        return
    expected = shape(full)
    tree = _single_part(raw)
    if tree is not None:  # a one-part message: the shortcut was taken
        assert shape(tree) == expected
    assert shape(mime_tree(raw)) == expected  # type: ignore[arg-type]


def test_the_shortcut_is_taken_for_plain_mail_and_not_for_multipart() -> None:
    plain = b"From: a@b.gov.vn\r\nSubject: x\r\n\r\nKinh gui\r\n\r\nvan thu\r\n"
    tree = _single_part(plain)
    assert tree is not None and tree.get_payload() == "Kinh gui\r\n\r\nvan thu\r\n"
    multipart = b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\n\r\nx\r\n--B--\r\n'
    assert _single_part(multipart) is None
    assert mime_tree(multipart) is not None and mime_tree(multipart).is_multipart()  # type: ignore[union-attr]


def _text_part_message(content: bytes, content_type: str = "text/plain") -> bytes:
    body = base64.encodebytes(content).replace(b"\n", b"\r\n")
    return (
        b"From: <a@x.gov.vn>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\n'
        + f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: base64\r\n\r\n".encode()
        + body
        + b"--B--\r\n"
    )


_WORD_XML = (
    '<?xml version="1.0"?>\r\n<?mso-application progid="Word.Document"?>\r\n'
    '<w:wordDocument xmlns:w="http://schemas.microsoft.com/office/word/2003/wordml"/>\r\n'
)


@pytest.mark.parametrize(
    ("content", "detected"),
    [
        (b"%PDF-1.7\n1 0 obj << >> endobj\n%%EOF\n", "application/pdf"),
        (gzip.compress(b"%PDF-1.7\n"), "application/gzip"),
        (_WORD_XML.encode("utf-16"), "application/msword"),
        (b"\xfe\xff" + _WORD_XML.encode("utf-16-be"), "application/msword"),
        (b"\xef\xbb\xbf" + _WORD_XML.encode(), "application/msword"),
    ],
)
def test_a_document_written_into_a_text_part_is_a_document(content: bytes, detected: str) -> None:
    """A document in a text part with no file name is a file, as a client that sniffs or
    saves the part opens it; its type is detected from the content."""
    [part] = file_parts(_text_part_message(content))
    assert part.attachment.detected_type == detected
    assert part.data == content


@pytest.mark.parametrize(
    "text",
    [
        "Kính gửi Văn phòng UBND huyện",
        "MZ là tên viết tắt",
        "PK của dự án",
        "<?xml version='1.0'?><a/>",
    ],
)
def test_text_is_not_a_document(text: str) -> None:
    """Text, even text that starts like a program or an archive, stays the message's text."""
    assert file_parts(_text_part_message(text.encode())) == []
