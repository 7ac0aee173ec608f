"""The Flask application factory: `gunicorn "service.app:create_app()"`."""
from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from service import admin, callbacks, health, webhooks
from service.alarms import Alarms
from service.intake import Intake
from service.keys import Keys
from service.logs import configure_logging
from service.queue import EventQueue
from service.redis_client import connect
from service.settings import Settings
from service.stores import StoreRegistry
from service.tokens import TokenStore


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

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # Salla and operators get JSON, never an HTML error page.
        slug = (exc.name or "error").lower().replace(" ", "_")
        return jsonify(error=slug, message=exc.description), exc.code

    return app
