"""The one backoff formula, shared by the trigger queue's retries, the outbox's re-sends and outbound
calls' retries (resources/retry.py).

The wait before retry number `attempt` (1 for the first retry) is `base * 2^(attempt - 1)`, capped, times
a jitter drawn from [0.5, 1]: a burst of failures spreads out, and no retry comes back at once (full
jitter's near-zero waits hammer a service that just failed).
"""

from __future__ import annotations

import random

JITTER_LOW = 0.5


def backoff_seconds(attempt: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait before retry number `attempt` (1-based; 0 or less counts as 1)."""
    ceiling = min(cap_s, base_s * 2.0 ** max(attempt - 1, 0))
    return float(ceiling * random.uniform(JITTER_LOW, 1.0))
