"""Pure decisions and texts: events, loyalty lots, expiry, schedule, send window, reminders, messages and templates.
No I/O and no imports of the rest of the project: everything else builds on these."""
