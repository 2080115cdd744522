"""PDF signature attacks (issue 15, class 1): a valid signature followed by a change of what
is shown is ``modified``; a signature dictionary that proves nothing fails; what signing tools
really write still passes. Cases: tests/support/pdf_attacks.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_documents_e2e import documents_gateway, with_files

from gateway.checks.signatures import validate_pdf
from tests.support.gateway import CLERK, OFFICIAL
from tests.support.pdf_attacks import CONTROLS, FORGED, MODIFIED, Attack
from tests.support.pki import TestPKI
from tests.support.smtp import Downstream


@pytest.fixture(scope="module")
def built(pki: TestPKI) -> dict[str, bytes]:
    """Every case's PDF, made once for the module."""
    return {case.name: case.build(pki) for case in (*MODIFIED, *FORGED, *CONTROLS)}


def judge(pki: TestPKI, pdf: bytes) -> Any:
    return validate_pdf(pdf, pki.store(), datetime.now(UTC) + timedelta(seconds=1))


@pytest.mark.parametrize("case", MODIFIED, ids=lambda c: c.name)
def test_a_change_after_signing_is_modified(
    pki: TestPKI, built: dict[str, bytes], case: Attack
) -> None:
    """fail/modified, and the signer whose signature the change defeats is still named."""
    check = judge(pki, built[case.name])
    assert (check.result, check.problem) == ("fail", "modified"), check
    assert "after" in check.detail or "replaced" in check.detail, check.detail


@pytest.mark.parametrize("case", FORGED, ids=lambda c: c.name)
def test_a_forged_signature_dictionary_never_passes(
    pki: TestPKI, built: dict[str, bytes], case: Attack
) -> None:
    """A signature that proves nothing is invalid, or unreadable where its dictionary does
    not parse: never a pass, never a temporary error that a retry could turn into one."""
    check = judge(pki, built[case.name])
    assert (check.result, check.problem) in {("fail", "invalid"), ("permerror", "unreadable")}


@pytest.mark.parametrize("case", CONTROLS, ids=lambda c: c.name)
def test_what_signing_tools_write_passes(
    pki: TestPKI, built: dict[str, bytes], case: Attack
) -> None:
    """Further signatures, certification that allows them, document timestamps, visible
    signatures, cross-reference streams and a line break after %%EOF all pass."""
    check = judge(pki, built[case.name])
    assert check.result == "pass", check


def test_a_countersignature_names_the_first_signature_it_cannot_bless(
    pki: TestPKI, built: dict[str, bytes]
) -> None:
    """The field filled in between two signatures is named, under the first signature."""
    check = judge(pki, built["form field filled, then countersigned"])
    assert "'Sig1'" in check.detail and "'so_van_ban' was filled in" in check.detail
    assert {s.subject for s in check.signers} == {
        pki.person.cert.subject.rfc4514_string(),
        pki.clerk.cert.subject.rfc4514_string(),
    }


@pytest.fixture
def gateway(start_gateway: Any, downstream: Downstream, tmp_path: Any, pki: TestPKI) -> Any:
    return documents_gateway(start_gateway, downstream, tmp_path, pki)


def test_through_the_gateway(gateway: Any, built: dict[str, bytes]) -> None:
    """Over SMTP: each change after signing is refused with 550 5.7.7
    document.modified_after_signing, each control is accepted, one record each."""
    for case in MODIFIED:
        message = with_files(("cong-van.pdf", built[case.name]))
        _, (code, text) = gateway.send(message, OFFICIAL, [CLERK])
        assert code == 550, (case.name, text)
        assert b"5.7.7 [document.modified_after_signing]" in text, (case.name, text)
    for case in CONTROLS:
        _, (code, text) = gateway.send(
            with_files(("cong-van.pdf", built[case.name])), OFFICIAL, [CLERK]
        )
        assert code == 250, (case.name, text)
    assert len(gateway.records()) == len(MODIFIED) + len(CONTROLS)
