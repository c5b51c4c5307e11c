"""/metrics' flow counters, kept in the store (domain/core/counters.py)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, String
from sqlalchemy.orm import Mapped, mapped_column

from domain.core.models.base import Base


class FlowCounter(Base):
    """One counter, or one histogram bucket, of a flow's figures: bumped by the flow in the transaction of
    the event it counts, only ever added to, whatever is pruned. `labels` is the label set as canonical
    JSON (sorted keys); `le` the bucket's upper bound in seconds (non-cumulative; infinity for the last
    bucket and for a plain counter); `count` the events, `total` the sum of the observed values."""

    __tablename__ = "flow_counters"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    labels: Mapped[str] = mapped_column(String(500), primary_key=True)
    le: Mapped[float] = mapped_column(Float, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Float)
