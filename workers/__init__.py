"""The Celery face: app, beat, signals, thin tasks, and the flow on top (sync, reminding, delivery, backfill, lifecycle).
Imports service (never service.web or service.cli); `celery -A workers ...` finds the app in workers/celery.py."""
