"""Cancel what is pending for a customer who opted out: the due set's entries and the ledger's live reminders."""
from __future__ import annotations

from service.state.ledger import CANCELLED, LIVE, count_stat


def cancel_pending(ledger, due, store, keys, m: int, c: int, now: float) -> int:
    """Every scheduled entry and every reminder on its way for a customer who opted out is
    cancelled (and counted), over plain Redis parts: the web (the unsubscribe link) and the
    workers (workers/reminding.py cancel_customer) call it."""
    cancelled = due.cancel_customer(m, c)
    for rid in ledger.live_claims(m, c):
        record = ledger.get(m, rid)
        if record is not None and record.state in LIVE:
            ledger.finish(m, c, rid, CANCELLED, now, error="the customer opted out", counter="deliveries_cancelled")
            cancelled += 1
    count_stat(store, keys, m, 0, "opted_out_cancelled", cancelled)
    return cancelled
