"""A claimer process for the kill test: claim, work, then ack with the effect and claim the next batch
in one transaction (queue.ack_and_claim), repeat.

`python -m tests.domain.queue_claimer DATABASE_URL NAME LEASE_SECONDS MARKER`; MARKER is a file it
creates once it holds its first claim (the test kills only claimers past start-up). It records each
claim in `claims_log`, each rescue of an abandoned claim in `reaps_log`, and each completed row's
effect in `effects` (primary key: the row id), so the test can prove every row took effect exactly
once, whichever claimers were killed and when.
"""

from __future__ import annotations

import os
import random
import sys
import time

from sqlalchemy import text

from domain.core.store import make_engine, transaction
from domain.queue import queue


def main(url: str, name: str, lease: float, marker: str) -> None:
    engine = make_engine(url)
    last_reap = 0.0
    finished: list[queue.Claimed] = []  # worked, not yet acked
    while True:
        if time.monotonic() - last_reap > 0.25:
            with transaction(engine) as session:
                reaped = queue.reap(session, ["phase"])
                if reaped:
                    session.execute(
                        text("INSERT INTO reaps_log (row_id, reaped_at) VALUES (:r, :t)"),
                        [{"r": r.id, "t": queue.now_utc().replace(tzinfo=None)} for r in reaped],
                    )
            last_reap = time.monotonic()
        # The ack of the batch just worked (with its effects) and the next claim: one transaction, as
        # a worker loops (queue.ack_and_claim; its commit does not wait for the WAL flush on PostgreSQL).
        with transaction(engine) as session:
            acked, claimed = queue.ack_and_claim(
                session, [(c.id, c.claim_token) for c in finished], ["phase"], 50, lease, name
            )
            effects = [{"r": c.id, "t": c.claim_token} for c in finished if c.id in acked]
            if effects:
                session.execute(text("INSERT INTO effects (row_id, token) VALUES (:r, :t)"), effects)
            if claimed:
                session.execute(
                    text(
                        "INSERT INTO claims_log (row_id, token, claimed_at, lease_expires_at, worker) "
                        "SELECT id, claim_token, claimed_at, lease_expires_at, :w FROM trigger_queue "
                        "WHERE id IN (" + ",".join(str(c.id) for c in claimed) + ")"
                    ),
                    {"w": name},
                )
        finished = []
        if claimed and not os.path.exists(marker):
            open(marker, "w").close()
        if not claimed:
            with transaction(engine) as session:
                left = session.execute(
                    text("SELECT count(*) FROM trigger_queue WHERE state IN ('available', 'claimed')")
                ).scalar_one()
            if left == 0:
                return
            time.sleep(0.05)
            continue
        time.sleep(random.uniform(0.05, 0.15))  # the work; a kill here abandons the claim
        finished = claimed


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4])
