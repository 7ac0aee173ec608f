"""The HTTP face: the Flask app (create_app), its blueprints (webhooks, callbacks, admin, health), gunicorn's conf.
Imports anything in service below it, never service.cli or workers/."""
