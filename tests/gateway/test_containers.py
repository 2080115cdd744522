"""Containers (issue 15, class 3): what an officer opens with one click is opened and judged,
or refused for good (5xx) when it can never be checked. Cases: tests/support/containers.py."""

from __future__ import annotations

from typing import Any

import pytest
from test_documents_e2e import documents_gateway, with_files

from tests.support.containers import NEVER_PASS, OPENED, Container
from tests.support.gateway import CLERK, OFFICIAL
from tests.support.pki import TestPKI, make_pdf, sign_pdf
from tests.support.smtp import Downstream


@pytest.fixture
def gateway(start_gateway: Any, downstream: Downstream, tmp_path: Any, pki: TestPKI) -> Any:
    return documents_gateway(start_gateway, downstream, tmp_path, pki)


@pytest.mark.parametrize("case", OPENED, ids=lambda c: c.name)
def test_the_document_inside_is_judged(gateway: Any, pki: TestPKI, case: Container) -> None:
    """Unsigned inside: refused as unsigned, the member named; signed inside: accepted."""
    name, data = case.wrap("cong-van.pdf", make_pdf())
    _, (code, text) = gateway.send(with_files((name, data)), OFFICIAL, [CLERK])
    assert code == 550 and b"[document.unsigned]" in text, text
    [inner] = gateway.records()[0]["inner_documents"]
    assert inner["filename"] == f"{name}/cong-van.pdf"
    signed = sign_pdf(make_pdf("Cong van da ky"), pki.clerk)
    _, (code, text) = gateway.send(with_files(case.wrap("cong-van.pdf", signed)), OFFICIAL, [CLERK])
    assert code == 250, text


@pytest.mark.parametrize("case", NEVER_PASS, ids=lambda c: c.name)
def test_what_can_never_be_checked_is_refused_for_good(
    gateway: Any, pki: TestPKI, case: Container
) -> None:
    """Even with a signed document inside: 550 document.unreadable, never 4xx."""
    signed = sign_pdf(make_pdf("Cong van da ky"), pki.clerk)
    _, (code, text) = gateway.send(with_files(case.wrap("cong-van.pdf", signed)), OFFICIAL, [CLERK])
    assert code == 550 and b"[document.unreadable]" in text, text
