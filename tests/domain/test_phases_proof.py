"""The proof packet a customer reads: every figure in the PDF's text (pypdf), in the currency's major unit
with its code, the fee as a percentage, dates a person reads, the hash and how to check it, a footer;
any Unicode seller printed as it is; the JSON twin without internal fields. And each tenant's folder sits
directly under PROOF_PACKET_DIR whatever its id holds."""

from __future__ import annotations

import hashlib
import io
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pypdf
import pytest

from domain.core import models
from domain.core.store import transaction
from domain.phases import phases_proof, syncs
from domain.phases.phases_money import money, percent
from tests.domain import factories

TENANT_IDS = ["łukasz-ü", "用户-七", "مستخدم", "a/b", "..", ".", "a%2Fb", "🦊" * 36]


def _packet(tenant_id: str) -> dict:
    return {
        "id": "pkt-1",
        "user_id": tenant_id,
        "sync_id": "s",
        "seller": {"id": tenant_id},
        "created_at": "2026-01-01T00:00:00+00:00",
        "claim": {"claim_id": "c"},
        "evidence": [],
        "payout": {"payout_id": "p", "amount": "1.00", "currency": "USD"},
        "fee": {"rate": "0.20", "amount": "0.20", "currency": "USD"},
        "net_payout": {"amount": "0.80", "currency": "USD"},
    }


def test_every_tenant_id_has_its_own_folder_directly_under_the_root(tmp_path: Path):
    root = tmp_path / "packets"
    folders = set()
    for tenant_id in TENANT_IDS:
        written = phases_proof.write(root, tenant_id, _packet(tenant_id))
        where = phases_proof.folder(root, tenant_id)
        assert written.json_path.parent == written.pdf_path.parent == where
        assert where.parent == root.resolve() and where.is_dir()
        assert written.json_path.read_bytes() == phases_proof.twin(_packet(tenant_id))
        folders.add(where)
    assert len(folders) == len(TENANT_IDS)


def test_money_in_major_units_with_the_currency_code_and_the_fee_as_a_percentage():
    assert money(Decimal("25.1"), "EUR") == "EUR 25.10"
    assert money(Decimal("2510"), "JPY") == "JPY 2,510"
    assert money(Decimal("1234567.5"), "usd") == "USD 1,234,567.50"
    assert money(Decimal("0.125"), "KWD") == "KWD 0.125"
    assert (percent(Decimal("0.20")), percent(Decimal("0.125"))) == ("20 %", "12.5 %")
    assert phases_proof.readable_time(datetime(2026, 12, 7, 9, 15, 42, 123456, tzinfo=UTC)) == (
        "7 December 2026, 09:15 UTC"
    )


INTERNAL = {"tenant_id", "idempotency_key", "route", "minor_units"}


def _keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for item in value.values() for k in _keys(item)}
    if isinstance(value, list):
        return {k for item in value for k in _keys(item)}
    return set()


@pytest.mark.parametrize(
    ("seller", "currency", "gross", "fee", "net"),
    [
        ("Zürich Ölmühle GmbH · 株式会社みどり", "EUR", "25.10", "EUR 5.02", "EUR 20.08"),
        ("Ελληνικά Εμπόριο · Москва", "JPY", "2510", "JPY 502", "JPY 2,008"),
    ],
)
def test_the_pdf_states_every_figure_and_the_json_twin_holds_no_internal_field(
    engine, tmp_path, seller, currency, gross, fee, net
):
    created = datetime(2026, 12, 7, 9, 15, 42, 918273, tzinfo=UTC)
    with transaction(engine) as session:
        tenant = factories.tenant(session)
        session.add(
            models.SyncProgress(
                tenant_id=tenant.id, user_id="u-1", sync_id="s-1", seller_id=seller, phase=7, status="running"
            )
        )
        packet = models.ProofPacket(
            tenant_id=tenant.id,
            user_id="u-1",
            sync_id="s-1",
            claim_id="CLM-7",
            payout_id="PO-7",
            currency=currency,
            payout_amount=gross,
            fee_amount=fee.split()[1].replace(",", ""),
            fee_minor=1,
            fee_idempotency_key="fee:secret-key",
            payment_intent_id="pi_123",
            evidence={"confidence": "0.9", "amount": gross, "currency": currency, "route": "auto_submit"},
            created_at=created,
        )
        session.add(packet)
        session.flush()
        document = syncs.packet_document(session, packet.id)
        tenant_id, packet_id = tenant.id, packet.id

    written = phases_proof.write(tmp_path, tenant_id, document)
    twin = written.json_path.read_bytes()
    assert hashlib.sha256(twin).hexdigest() == written.json_sha256
    assert not _keys(json.loads(twin)) & INTERNAL
    assert tenant_id not in twin.decode() and "secret-key" not in twin.decode()

    reader = pypdf.PdfReader(io.BytesIO(written.pdf_path.read_bytes()))
    text = " ".join(" ".join(page.extract_text() for page in reader.pages).split())
    gross_money = money(Decimal(gross), currency)
    for expected in (
        f"Seller {seller}",
        f"Gross payout {gross_money}",
        f"Platform fee (20 %) {fee}",
        f"Net payout {net}",
        "Issued 7 December 2026, 09:15 UTC",
        f"payout PO-7 of {gross_money}",
        "Claim id CLM-7",
        written.json_sha256,
        f"sha256sum proof-packet-{packet_id}.json",
        f"Proof packet {packet_id} · page 1 of 1 · generated",
    ):
        assert expected in text, expected
    assert re.search(r"generated \d{1,2} [A-Z][a-z]+ \d{4}, \d{2}:\d{2} UTC", text)
    assert "minor units" not in text and "0.20" not in text and "09:15:42" not in text
    assert "fee:secret-key" not in text and tenant_id not in text
