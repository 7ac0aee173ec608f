"""Celery workers: read loyalty histories from Salla and deliver reminders.

`celery -A workers ...` finds the app in workers/celery.py.
"""
