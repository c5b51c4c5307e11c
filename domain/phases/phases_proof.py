"""Phase 7's proof packet: a PDF (fpdf2) with the claim, its evidence, the payout and the platform fee,
and its JSON twin; the twin's SHA-256 is printed in the PDF, so anyone holding both can check that the
PDF describes exactly that data. Files go under PROOF_PACKET_DIR/<tenant>/<packet id>.{json,pdf}, written
to a temporary name and renamed, so a reader never sees half a file and a retry simply rewrites them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fpdf import FPDF

from domain.core.urls import path_segment


@dataclass(frozen=True)
class WrittenPacket:
    pdf_path: Path
    json_path: Path
    json_sha256: str


def twin(packet: dict[str, Any]) -> bytes:
    """The JSON twin's exact bytes: sorted keys, no spaces, UTF-8 (the hash is over these)."""
    return json.dumps(packet, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


MAX_FOLDER_NAME = 200  # bytes; file systems allow 255


def folder(root: Path, tenant_id: str) -> Path:
    """The tenant's folder, directly under `root` whatever the id holds (`/`, `..`, any script): the id
    as one URL path segment, which is ASCII and injective; one too long for a file name is cut and
    completed by its hash."""
    name = path_segment(tenant_id)
    if len(name) > MAX_FOLDER_NAME:
        name = f"{name[: MAX_FOLDER_NAME - 65]}-{hashlib.sha256(tenant_id.encode()).hexdigest()}"
    return root.resolve() / name


def _atomic_write(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def _latin1(text: object) -> str:
    # The PDF's core fonts are Latin-1: anything else is shown as '?', the JSON twin keeps it exactly.
    return str(text).encode("latin-1", "replace").decode("latin-1")


def render_pdf(packet: dict[str, Any], json_sha256: str) -> bytes:
    pdf = FPDF()
    pdf.set_compression(False)  # plain text content: the hash can be found in the file as it is
    pdf.set_title(f"Proof packet {packet['id']}")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, "Proof packet", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)

    def line(label: str, value: object) -> None:
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(45, 6, _latin1(label))
        pdf.set_font("Helvetica", size=10)
        pdf.multi_cell(0, 6, _latin1(value), new_x="LMARGIN", new_y="NEXT")

    def section(title: str) -> None:
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")

    line("Packet", packet["id"])
    line("User", packet["user_id"])
    line("Sync", packet["sync_id"])
    line("Created", packet["created_at"])
    section("Claim")
    claim = packet["claim"]
    line("Claim id", claim["claim_id"])
    line("Confidence", claim.get("confidence", "-"))
    line("Claimed amount", f"{claim.get('amount', '-')} {claim.get('currency', '')}".strip())
    section("Evidence")
    evidence = packet["evidence"]
    line("Evidence ids", ", ".join(evidence) if evidence else "(none recorded)")
    section("Payout")
    payout = packet["payout"]
    line("Payout id", payout["payout_id"])
    line("Amount", f"{payout['amount']} {payout['currency']}")
    section("Platform fee")
    fee = packet["fee"]
    line("Rate", fee["rate"])
    line("Fee", f"{fee['amount']} {fee['currency']} ({fee['minor_units']} minor units)")
    line("Payment intent", fee.get("payment_intent_id") or "-")
    section("Integrity")
    line("JSON twin", f"{packet['id']}.json")
    line("SHA-256", json_sha256)
    return bytes(pdf.output())


def write(root: Path, tenant_id: str, packet: dict[str, Any]) -> WrittenPacket:
    """Write the twin then the PDF that names its hash; returns both paths and the hash."""
    where = folder(root, tenant_id)
    where.mkdir(parents=True, exist_ok=True)
    data = twin(packet)
    digest = hashlib.sha256(data).hexdigest()
    json_path, pdf_path = where / f"{packet['id']}.json", where / f"{packet['id']}.pdf"
    _atomic_write(json_path, data)
    _atomic_write(pdf_path, render_pdf(packet, digest))
    return WrittenPacket(pdf_path, json_path, digest)
