"""The Flask application factory: `gunicorn "service.web.app:create_app()"`."""
from __future__ import annotations

import json
from dataclasses import dataclass

import redis
import logging

from flask import Flask, jsonify
from werkzeug.wrappers import Response
from werkzeug.exceptions import HTTPException

from service.web import admin, callbacks, embedded, health, webhooks
from service.ops import admin_guard
from service.state.alarms import Alarms
from service.state.intake import Intake
from service.state.keys import Keys
from service.config.logs import configure_logging, correlation_id, new_correlation_id
from service.clients.queue import EventQueue
from service.state.redis_client import connect
from service.config.settings import Settings
from service.state.stores import StoreRegistry
from service.state.tokens import TokenStore


log = logging.getLogger(__name__)


@dataclass
class Dependencies:
    settings: Settings
    redis: redis.Redis
    queue: EventQueue
    tokens: TokenStore
    registry: StoreRegistry
    keys: Keys
    alarms: Alarms
    intake: Intake


def create_app(settings: Settings | None = None, redis_client: redis.Redis | None = None, queue=None) -> Flask:
    # Settings are read here, so a wrong value stops gunicorn before it takes a request.
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.webhook_max_body_bytes
    store = redis_client if redis_client is not None else connect(settings, fail_fast=True)
    app.extensions["reminder_service"] = Dependencies(
        settings=settings,
        redis=store,
        queue=queue if queue is not None else EventQueue(settings),
        tokens=TokenStore(store, settings.redis_key_prefix, settings.token_encryption_keys),
        registry=StoreRegistry(store, settings.redis_key_prefix),
        keys=Keys(settings.redis_key_prefix),
        alarms=Alarms(store, settings.redis_key_prefix),
        intake=Intake(store, settings.redis_key_prefix),
    )
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(callbacks.bp)
    app.register_blueprint(embedded.bp)

    off = admin_guard.admin_off_reason(settings.admin_token)
    if off and settings.admin_token:
        log.error("admin API off: %s", off)  # set but too short: an operator meant it to be on
    elif off:
        log.info("admin API off: %s", off)
    elif settings.admin_port is not None:
        log.info("admin API on port %d only", settings.admin_port)

    # Every request gets a correlation id, and the admin port serves /admin/* (and the probes)
    # only: a WSGI wrapper rather than Flask's request hooks, which cost each webhook about as
    # much as its Redis call's packing (bench/ingest.py).
    app.wsgi_app = Correlated(app.wsgi_app, settings.admin_port)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # Salla and operators get JSON, never an HTML error page.
        slug = (exc.name or "error").lower().replace(" ", "_")
        return jsonify(error=slug, message=exc.description), exc.code

    return app


ADMIN_PORT_PATHS = ("/admin/", "/healthz", "/readyz")
_ADMIN_PORT_ONLY = json.dumps({"error": "not_found", "message": "the admin port serves /admin/* only"},
                             separators=(",", ":")).encode() + b"\n"


class Correlated:
    """Wraps the app's WSGI callable. Each request gets a correlation id for its duration: the
    webhook's is stored with its event in the inbox and follows it through the read and each
    delivery (service/config/logs.py); every answer carries it back in X-Correlation-Id. With an
    admin port, that port answers 404 to anything but the admin API and the probes."""

    def __init__(self, wsgi_app, admin_port: int | None):
        self.wsgi_app = wsgi_app
        self.admin_port = None if admin_port is None else str(admin_port)

    def __call__(self, environ, start_response):
        cid = new_correlation_id()
        token = correlation_id.set(cid)
        try:
            def start(status, headers, exc_info=None):
                headers.append(("X-Correlation-Id", cid))
                return start_response(status, headers, exc_info)

            if self.admin_port is not None and environ.get("SERVER_PORT") == self.admin_port \
                    and not ("/" + environ.get("PATH_INFO", "").lstrip("/")).startswith(ADMIN_PORT_PATHS):
                return Response(_ADMIN_PORT_ONLY, 404, mimetype="application/json")(environ, start)
            return self.wsgi_app(environ, start)
        finally:
            correlation_id.reset(token)
