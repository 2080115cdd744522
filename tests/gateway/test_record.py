"""The decision record's one reader and one serializer: records of every schema version since 1
are read, and written back exactly as they were stored; the report counts from their fields.

The old records below are laid out as the gateway wrote them at each version (see
``git log -p gateway/engine.py``; the record is built in gateway/record.py now): schema 1 at
the first commit, schema 2 before and after inner documents were put on record, schema 3 with
``notice``, schema 4 with ``authenticated``.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from gateway.directory import Account
from gateway.record import SCHEMA_VERSION, Record, RecordError
from gateway.store.chain import GENESIS, chain_hash
from tests.support.gateway import CLERK, OFFICIAL, make_config, message
from tests.support.records import score_records
from tests.support.smtp import Downstream

PERSONAL = "nguyenvana@gmail.com"
POLICY = {"name": "test policy", "source": "/etc/congvu/policy.toml", "sha256": "ab" * 32}
SIGNER = {
    "subject": "1.2.840.113549.1.9.1=a.nguyen@dilinh.lamdong.gov.vn,CN=Nguyen Van A,O=UBND,C=VN",
    "organisation": "UBND",
    "serial": "dcf150120e348e7f24afaabfc18402cb538f7fc",
    "fingerprint": "f1ef4aaa54b8c583c868facbc97c182b77b973fad46f5fb1fb7f436c678ce016",
    "signing_time": "2026-11-22T17:54:21Z",
    "timestamped": False,
    "not_after": "2028-11-21T17:54:21Z",
}


def v1(ident: str, sender: str) -> dict[str, Any]:
    """Schema 1: no documents, signatures, DKIM, notice or proof of the sender."""
    return {
        "schema": 1,
        "id": ident,
        "time": "2026-10-05T02:00:01.000Z",
        "client": {"ip": "203.0.113.5", "helo": "mx.example.net", "tls": True},
        "envelope": {
            "mail_from": sender,
            "recipients": [
                {"address": CLERK, "accepted": True, "reply": "250 2.1.5 Ok", "reason": None}
            ],
        },
        "headers": {
            "from": [{"raw": f"Nguyen Van A <{sender}>", "addresses": [sender], "error": None}],
            "sender": [],
            "reply_to": [],
            "subject": "Bao cao tuan",
            "message_id": "<1@example.net>",
        },
        "size": 20480,
        "attachments": [
            {
                "filename": "bao-cao.pdf",
                "declared_type": "application/pdf",
                "detected_type": "application/pdf",
                "size": 18000,
                "sha256": "1" * 64,
            }
        ],
        "findings": [
            {
                "id": "sender-personal-domain",
                "mode": "enforce",
                "outcome": "pass",
                "reason": None,
                "detail": "",
            }
        ],
        "verdict": "accept",
        "reasons": [],
        "monitor_reasons": [],
        "mode": "enforce",
        "reply": f"250 2.0.0 Ok: accepted as {ident}",
        "policy": POLICY,
        "processing_ms": 12.5,
    }


def v2(ident: str, sender: str, *, inner: bool) -> dict[str, Any]:
    """Schema 2: documents with their signature checks, S/MIME, DKIM, the declared class; the
    first records of schema 2 were written before ``inner_documents`` existed."""
    record = v1(ident, sender) | {"schema": 2, "smime": None, "document_class": ""}
    record["attachments"][0] |= {
        "document": True,
        "signatures": [
            {
                "method": "pdf",
                "result": "pass",
                "problem": "",
                "detail": "",
                "signers": [SIGNER],
                "elapsed_ms": 69.149,
                "cached": False,
            }
        ],
    }
    record["dkim"] = [
        {"domain": sender.rpartition("@")[2], "selector": "s1", "result": "pass", "detail": ""}
    ]
    if inner:
        record["inner_documents"] = [
            {
                "filename": "ho-so.zip/to-trinh.docx",
                "detected_type": "application/vnd.openxmlformats-officedocument"
                ".wordprocessingml.document",
                "size": 9000,
                "sha256": "2" * 64,
                "signatures": [],
                "in_signed_smime": False,
            }
        ]
        record["attachments"].append(
            {
                "filename": "ho-so.zip",
                "declared_type": "application/zip",
                "detected_type": "application/zip",
                "size": 9500,
                "sha256": "3" * 64,
                "document": False,
                "signatures": [],
            }
        )
    return record


def v3(ident: str, sender: str) -> dict[str, Any]:
    """Schema 3: what happened about a refusal notice."""
    reason = "external sender (a notice could be backscatter to a forged address)"
    notice = {"kind": None, "sent": False, "to": None, "message_id": None, "reason": reason}
    return v2(ident, sender, inner=True) | {"schema": 3, "notice": notice}


def v4(ident: str, sender: str) -> dict[str, Any]:
    """Schema 4: the sender proven. Refused: one unsigned PDF, and a drawing exempt by its file
    type whose name holds "; " (the note's claims are joined by "; " too)."""
    record = v3(ident, sender) | {"schema": 4, "authenticated": True}
    drawing, unsigned = "Bản đồ; khu A.dwg", "to-trinh.pdf"
    record["attachments"] = [
        {
            "filename": drawing,
            "declared_type": "application/octet-stream",
            "detected_type": "application/octet-stream",
            "size": 20,
            "sha256": "4" * 64,
            "document": True,
            "signatures": [],
        },
        {
            "filename": unsigned,
            "declared_type": "application/pdf",
            "detected_type": "application/pdf",
            "size": 1000,
            "sha256": "5" * 64,
            "document": True,
            "signatures": [
                {
                    "method": "pdf",
                    "result": "none",
                    "problem": "unsigned",
                    "detail": "no signature",
                    "signers": [],
                    "elapsed_ms": 3.2,
                    "cached": False,
                }
            ],
        },
    ]
    record["inner_documents"] = []
    record["findings"] = [
        {
            "id": "document-exemption",
            "mode": "enforce",
            "outcome": "note",
            "reason": "document.exempted",
            "detail": f"{drawing} exempt by file type .dwg",
        },
        {
            "id": "document-signature-required",
            "mode": "enforce",
            "outcome": "reject",
            "reason": "document.unsigned",
            "detail": f"{unsigned}: pdf none; unsigned; no signature",
        },
    ]
    record |= {"verdict": "reject", "reasons": ["document.unsigned"], "reply": "550 5.7.1 ..."}
    return record


OLD = {
    "v1": v1("01A0000000000000000000001", OFFICIAL),
    "v2 before inner documents": v2("01A0000000000000000000002", OFFICIAL, inner=False),
    "v2": v2("01A0000000000000000000003", OFFICIAL, inner=True),
    "v3": v3("01A0000000000000000000004", PERSONAL),
    "v4": v4("01A0000000000000000000005", OFFICIAL),
}


@pytest.mark.parametrize("name", [n for n in OLD if n != "v2 before inner documents"])
def test_old_records_are_read_and_written_back_as_stored(name: str) -> None:
    """A record keeps its version: read, then serialized, it is the text that was stored (and
    hashed), without the fields later versions added."""
    stored = OLD[name]
    record = Record.from_dict(json.loads(json.dumps(stored)))
    assert record.schema == stored["schema"]
    assert record.to_dict() == stored
    assert record.to_json() == json.dumps(stored, ensure_ascii=False, sort_keys=True)


def test_fields_older_records_lack_are_empty() -> None:
    """What a version did not write reads as empty, never as an error or a guess."""
    first = Record.from_dict(OLD["v1"])
    [pdf] = first.attachments
    assert (pdf.document, pdf.signatures, pdf.exempt, pdf.in_signed_smime) == (False, (), "", False)
    assert (first.dkim, first.smime, first.inner_documents) == ((), None, ())
    assert (first.notice, first.authenticated) == (None, False)
    stored = OLD["v2 before inner documents"]
    early = Record.from_dict(stored)
    assert early.attachments[0].signatures[0].signers[0].serial == SIGNER["serial"]
    # The one record not written back to the letter: schema 2 says it has inner documents.
    assert early.to_dict() == stored | {"inner_documents": []}
    notice = Record.from_dict(OLD["v3"]).notice
    assert notice is not None and notice.reason.startswith("external sender")


def test_old_records_in_the_report() -> None:
    """Records of every version score as their fields say: before schema 4 no official sender
    was proven (no credit); a personal address with its provider's DKIM counts; a schema 4
    record's exempt drawing is found by its name although the name holds "; "."""
    account = Account(
        OFFICIAL, "Nguyễn Văn A", "UBND huyện", "officer", date(2022, 1, 1), (PERSONAL,)
    )
    records = [Record.from_dict(r) for r in OLD.values()]
    [score], _ = score_records(records, [account], period_end=date(2026, 10, 31))
    assert (score.messages_sent, score.accepted, score.refused) == (2, 1, 1)  # v3 and v4
    assert score.from_personal_providers == 1  # v3, from gmail.com with gmail's DKIM
    # v3: one signed PDF, one document inside an archive without a signature;
    # v4: the drawing (exempt by file type), the unsigned PDF.
    counted = (score.documents_signed, score.documents_unsigned, score.documents_exempted)
    assert counted == (1, 2, 1)
    assert score.evidence == [OLD["v3"]["id"], OLD["v4"]["id"]]
    drawing = Record.from_dict(OLD["v4"]).attachments[0]
    assert drawing.exempt == "file type .dwg"


def test_a_record_unlike_its_version_is_refused_with_where() -> None:
    """A field its version always wrote, missing or of another type: an error naming the
    field (an edited or foreign record), never a default."""
    lacking = copy.deepcopy(OLD["v4"])
    del lacking["authenticated"]
    with pytest.raises(RecordError, match=r"01A0000000000000000000005: authenticated: missing"):
        Record.from_dict(lacking)
    wrong = copy.deepcopy(OLD["v4"])
    wrong["attachments"][1]["signatures"][0]["cached"] = 0
    with pytest.raises(RecordError, match=r"attachments\.1\.signatures\.0\.cached: 0 is not bool"):
        Record.from_dict(wrong)
    with pytest.raises(RecordError, match="no schema version"):
        Record.from_dict({k: v for k, v in OLD["v1"].items() if k != "schema"})


def test_a_newer_record_is_read_for_what_this_version_knows() -> None:
    """A gateway not yet upgraded reads records a newer one wrote to the shared store."""
    current = replace(Record.from_dict(OLD["v4"]), schema=SCHEMA_VERSION).to_dict()
    record = Record.from_dict(current | {"schema": SCHEMA_VERSION + 1, "new": [1]})
    assert record.schema == SCHEMA_VERSION + 1 and record.verdict == "reject"


def test_the_stored_text_is_what_the_serializer_writes(
    start_gateway, downstream: Downstream, tmp_path: Path
) -> None:
    """The store writes a new record as Record.to_json() gives it, so its chain hash is the
    hash of that text: records read back can be re-hashed by anyone holding this reader."""
    gw = start_gateway(make_config(tmp_path, downstream.port))
    gw.send(message(), OFFICIAL, [CLERK])
    with sqlite3.connect(tmp_path / "decisions.sqlite") as db:
        [(text, prev, digest)] = db.execute("SELECT record, prev_hash, hash FROM decisions")
    assert prev == GENESIS
    record = Record.from_dict(json.loads(text))
    assert record.schema == SCHEMA_VERSION
    assert chain_hash(GENESIS, record.to_json()) == digest
