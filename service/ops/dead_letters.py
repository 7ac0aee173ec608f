"""An operator's two answers to a dead letter: replay it (`scheduled` again, due now) or drop it.
Plain Redis: the admin API and the CLI call them; the delivery itself is workers/delivery.py's."""
from __future__ import annotations

from service.state.due_set import DueEntry
from service.state.ledger import DEAD, DROPPED


def _timer(record) -> DueEntry:
    """The due-set entry that watches the reminder (keyed by its id, as workers/delivery.py arms it)."""
    return DueEntry.for_reminder(record.merchant_id, record.customer_id, record.stage, record.reminder_id)

def replay(ledger, due, merchant_id: int, reminder_id: str, now: float) -> bool:
    """An operator sends a dead letter again (`dead-letters replay`): back to `scheduled`, its
    timer due now, so the next sweep publishes it. Plain Redis: the web and the CLI call it."""
    record = ledger.replay(merchant_id, reminder_id, now)
    if record is None:
        return False
    due.schedule([(now, _timer(record))])
    return True


def drop(ledger, due, merchant_id: int, reminder_id: str, now: float) -> bool:
    """An operator gives up on a dead letter: its lots count as handled at its stage, not as reminded."""
    record = ledger.get(merchant_id, reminder_id)
    if record is None or record.state != DEAD:
        return False
    ledger.finish(merchant_id, record.customer_id, reminder_id, DROPPED, now, counter="dead_letters_dropped")
    due.remove([_timer(record)])
    return True
