"""Phase 7's proof packet, for the customer: a PDF (fpdf2) saying what it proves, with the seller, the
gross payout, the platform fee (its percentage and amount) and the net payout, the claim and its evidence,
and its JSON twin; the twin's SHA-256 is printed in the PDF with the commands that check it, so anyone
holding both can check that the PDF describes exactly that data. Files go under
PROOF_PACKET_DIR/<tenant>/<packet id>.{json,pdf}, written to a temporary name and renamed, so a reader
never sees half a file and a retry simply rewrites them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.fonts import TTFFont

from domain.core.urls import path_segment
from domain.phases.phases_money import money, percent


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


# The PDF's fonts (Debian's fonts-dejavu-core, fonts-droid-fallback and fonts-unifont; scripts/ensure-fonts
# installs them): DejaVu Sans for the text (Latin, Greek, Cyrillic, Arabic, Hebrew, ...), then for a
# character it lacks Droid Sans Fallback (CJK, Hangul), then GNU Unifont (every other script of the BMP and
# the planes above), so any name prints as it is. Looked up by file name under these folders.
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))
FONTS = {
    "text": "DejaVuSans.ttf",
    "text_bold": "DejaVuSans-Bold.ttf",
}
FALLBACK_FONTS = {
    "droid": "DroidSansFallbackFull.ttf",
    "unifont": "unifont.otf",
    "unifont_upper": "unifont_upper.otf",
}


class MissingFont(RuntimeError):
    pass


@functools.cache
def font_path(name: str) -> Path:
    for where in FONT_DIRS:
        for found in sorted(where.rglob(name)) if where.is_dir() else []:
            return found
    raise MissingFont(
        f"font {name} not found under {', '.join(map(str, FONT_DIRS))}: install Debian's fonts-dejavu-core, "
        "fonts-droid-fallback and fonts-unifont (scripts/ensure-fonts)"
    )


_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def readable_time(moment: datetime) -> str:
    """A date a person reads, in UTC: "7 December 2026, 09:15 UTC"."""
    utc = moment.astimezone(UTC)
    return f"{utc.day} {_MONTHS[utc.month - 1]} {utc.year}, {utc:%H:%M} UTC"


def proves(packet: dict[str, Any]) -> str:
    """The paragraph saying what the packet proves."""
    gross, fee, net, rate = _figures(packet)
    seller = packet["seller"]["id"] or "the seller"
    return (
        f"This packet records that payout {packet['payout']['payout_id']} of {gross} was received for "
        f"{seller} on claim {packet['claim']['claim_id']}, that the platform fee of {rate} of it ({fee}) was "
        f"charged, and that the net payout is {net}. It lists the evidence the claim was matched with. Every "
        "figure is also in the packet's JSON file, whose SHA-256 is printed below: a file with that hash holds "
        "exactly the data this document describes."
    )


def _figures(packet: dict[str, Any]) -> tuple[str, str, str, str]:
    currency = packet["payout"]["currency"]
    return (
        money(Decimal(packet["payout"]["amount"]), currency),
        money(Decimal(packet["fee"]["amount"]), currency),
        money(Decimal(packet["net_payout"]["amount"]), currency),
        percent(Decimal(packet["fee"]["rate"])),
    )


class _Document(FPDF):
    def __init__(self, packet_id: str, generated_at: str) -> None:
        super().__init__()
        self.packet_id, self.generated_at = packet_id, generated_at

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("text", size=8)
        self.set_text_color(90)
        self.cell(
            0,
            10,
            f"Proof packet {self.packet_id}  ·  page {self.page_no()} of {{nb}}  ·  generated {self.generated_at}",
            align="C",
        )


def _printed(packet: dict[str, Any]) -> Iterator[str]:
    """The packet's values the PDF prints (the rest of its text is the page's own, in the text font)."""
    claim, fee = packet["claim"], packet["fee"]
    yield from (packet["id"], packet["seller"]["id"] or "", claim["claim_id"], packet["payout"]["payout_id"])
    yield from (fee.get("payment_intent_id") or "", claim.get("currency") or "", *packet["evidence"])


def _covered(pdf: FPDF, family: str) -> set[int]:
    font = pdf.fonts[family]
    return set(font.cmap) if isinstance(font, TTFFont) else set()


def _add_fallbacks(pdf: FPDF, packet: dict[str, Any]) -> None:
    """The fallback fonts that the packet's characters missing from the text font need, in order (loading
    one costs up to a second: most packets need none)."""
    missing = {ord(c) for text in _printed(packet) for c in str(text)} - _covered(pdf, "text")
    families = []
    for family, name in FALLBACK_FONTS.items():
        if not missing:
            break
        pdf.add_font(family, "", str(font_path(name)))
        families.append(family)
        missing -= _covered(pdf, family)
    if families:
        pdf.set_fallback_fonts(families, exact_match=False)


def render_pdf(packet: dict[str, Any], json_sha256: str, generated_at: datetime | None = None) -> bytes:
    """The customer's page(s): what the packet proves, the figures, the claim and its evidence, how to
    verify the hash; a footer with the packet id, page n of m and when it was generated."""
    pdf = _Document(packet["id"], readable_time(generated_at or datetime.now(UTC)))
    pdf.set_compression(False)  # plain text content: the hash can be found in the file as it is
    pdf.set_title(f"Proof packet {packet['id']}")
    for family, style, font in (("text", "", "text"), ("text", "B", "text_bold")):
        pdf.add_font(family, style, str(font_path(FONTS[font])))
    _add_fallbacks(pdf, packet)
    pdf.set_auto_page_break(True, margin=22)
    pdf.add_page()
    gross, fee, net, rate = _figures(packet)
    claim, currency = packet["claim"], packet["payout"]["currency"]

    def text(size: float, value: str, style: str = "", height: float = 5.5) -> None:
        pdf.set_font("text", style, size)
        pdf.multi_cell(0, height, value, align="L", new_x="LMARGIN", new_y="NEXT")

    def line(label: str, value: object, style: str = "") -> None:
        pdf.set_font("text", "B", 10)
        pdf.cell(55, 7, label)
        pdf.set_font("text", style, 10)
        pdf.multi_cell(0, 7, str(value), align="L", new_x="LMARGIN", new_y="NEXT")

    def section(title: str) -> None:
        pdf.ln(4)
        text(12, title, "B", 8)

    text(18, "Proof of payout", "B", 10)
    text(10, f"Issued {readable_time(datetime.fromisoformat(packet['created_at']))}")
    pdf.ln(2)
    text(10, proves(packet))
    section("Payout")
    line("Seller", packet["seller"]["id"] or "not recorded")
    line("Gross payout", gross)
    line(f"Platform fee ({rate})", fee)
    line("Net payout", net, "B")
    line("Payout id", packet["payout"]["payout_id"])
    line("Fee payment", packet["fee"].get("payment_intent_id") or "none (no fee due)")
    section("Claim")
    line("Claim id", claim["claim_id"])
    if claim.get("amount") is not None:
        line("Amount claimed", money(Decimal(str(claim["amount"])), claim.get("currency") or currency))
    if claim.get("confidence") is not None:
        line("Match confidence", percent(Decimal(str(claim["confidence"]))))
    line("Evidence", ", ".join(packet["evidence"]) or "none recorded")
    section("How to verify this packet")
    json_name = f"proof-packet-{packet['id']}.json"
    text(
        10,
        f"Download the JSON file ({json_name}: the same address with ?format=json) and compute its SHA-256. "
        "It must equal:",
    )
    pdf.ln(1)
    # A core font: the hash and the commands are plain ASCII text in the file, found by a byte search too.
    pdf.set_font("Courier", size=9.5)
    pdf.multi_cell(0, 5.5, json_sha256, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    text(10, "For example:")
    pdf.set_font("Courier", size=9)
    for command in (
        f"sha256sum {json_name}",
        f"shasum -a 256 {json_name}",
        f"Get-FileHash -Algorithm SHA256 {json_name}",
    ):
        pdf.multi_cell(0, 5, command, new_x="LMARGIN", new_y="NEXT")
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
