"""Proof packet files: each tenant's folder sits directly under PROOF_PACKET_DIR whatever its id holds."""

from __future__ import annotations

from pathlib import Path

from domain.phases import phases_proof

TENANT_IDS = ["łukasz-ü", "用户-七", "مستخدم", "a/b", "..", ".", "a%2Fb", "🦊" * 36]


def _packet(tenant_id: str) -> dict:
    return {
        "id": "pkt-1",
        "tenant_id": tenant_id,
        "user_id": tenant_id,
        "sync_id": "s",
        "created_at": "2026-01-01T00:00:00+00:00",
        "claim": {"claim_id": "c"},
        "evidence": [],
        "payout": {"payout_id": "p", "amount": "1", "currency": "USD"},
        "fee": {"rate": "0.2", "amount": "0.20", "currency": "USD", "minor_units": 20},
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
