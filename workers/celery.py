"""The Celery application: `celery -A workers worker|beat|flower` finds it here (proj/celery.py is
Celery's own convention), so importing other worker modules in tests does not read settings.

Settings are read at import, so a wrong value stops the worker before it takes a task.
"""
from __future__ import annotations

# First: it sets PROMETHEUS_MULTIPROC_DIR before prometheus_client is imported (service/config/metrics.py).
from service.config import metrics  # noqa: F401  isort: skip
from celery import Celery

from service.config.celery_config import celery_config
from service.config.logs import configure_logging
from service.config.settings import settings_or_exit

settings = settings_or_exit()
configure_logging(settings.log_level, log_format=settings.log_format)

app = Celery("workers")
app.conf.update(celery_config(settings))
# Registers the tasks with this app (they are declared with shared_task).
app.conf.imports = ("workers.tasks",)
# JSON logs, correlation ids in task headers, the metrics port (Celery signals).
from workers import observability  # noqa: E402,F401
