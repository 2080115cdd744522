"""STARTTLS when a certificate is configured; the decision record's frozen schema."""

from __future__ import annotations

import datetime as dt
import hashlib
import smtplib
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.gateway import CLERK, OFFICIAL, make_config, message
from tests.support.smtp import Downstream


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw.lamdong.gov.vn")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_starttls_is_offered_with_a_certificate_and_recorded(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """With tls_cert/tls_key, EHLO offers STARTTLS; mail over TLS is marked ESMTPS and tls=true."""
    cert, key = self_signed(tmp_path)
    gw = start_gateway(make_config(tmp_path, downstream.port, tls_cert=cert, tls_key=key))
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        assert "starttls" in smtp.esmtp_features
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        smtp.starttls(context=context)
        smtp.ehlo("client.test")
        assert "starttls" not in smtp.esmtp_features
        smtp.sendmail(OFFICIAL, [CLERK], message())
    assert b"with ESMTPS id" in b" ".join(downstream.handler.messages[0].data.split())
    assert gw.records()[0]["client"]["tls"] is True


RECORD_KEYS = {
    "schema",
    "id",
    "time",
    "client",
    "envelope",
    "headers",
    "size",
    "attachments",
    "inner_documents",
    "notice",
    "authenticated",
    "findings",
    "verdict",
    "reasons",
    "monitor_reasons",
    "mode",
    "reply",
    "policy",
    "processing_ms",
    "smime",
    "dkim",
    "document_class",
}


def test_decision_record_schema_is_frozen(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """Auditors parse these records: keys and shapes change only with a schema version bump."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    attachment = "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n"
    body = (
        "--b\r\nContent-Type: text/plain\r\n\r\nXem dinh kem.\r\n"
        "--b\r\nContent-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="=?utf-8?b?QsOhbyBjw6FvLnBkZg==?="\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJSVFT0YK\r\n--b--\r\n"
    )
    gw.send(message(extra=attachment, body=body), OFFICIAL, [CLERK])
    [record] = gw.records()
    assert set(record) == RECORD_KEYS
    assert record["schema"] == 6
    assert len(record["id"]) == 26 and record["time"].endswith("Z")
    assert set(record["client"]) == {"ip", "helo", "tls", "login"}
    assert set(record["envelope"]) == {"mail_from", "recipients"}
    assert set(record["envelope"]["recipients"][0]) == {"address", "accepted", "reply", "reason"}
    assert set(record["headers"]) == {"from", "sender", "reply_to", "subject", "message_id"}
    assert set(record["findings"][0]) == {"id", "mode", "outcome", "reason", "detail"}
    assert set(record["policy"]) == {"name", "source", "sha256"}
    assert record["headers"]["message_id"] == "<t1@test>"
    assert record["size"] == len(message(extra=attachment, body=body))
    [att] = record["attachments"]
    content = b"%PDF-1.4\n%%EOF\n"
    assert att == {
        "filename": "Báo cáo.pdf",
        "declared_type": "application/octet-stream",
        "detected_type": "application/pdf",  # by content, not by the declared type
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "document": True,
        "signatures": [att["signatures"][0]],
        "in_signed_smime": False,
        "exempt": "",
    }
    # Not a real PDF (a header and EOF only): unreadable, said so, never a crash.
    [check] = att["signatures"]
    assert (check["method"], check["result"], check["problem"]) == (
        "pdf",
        "permerror",
        "unreadable",
    )
    assert set(check) == {
        "method",
        "result",
        "problem",
        "detail",
        "signers",
        "elapsed_ms",
        "cached",
    }
