"""Configuration: settings from the environment, the Celery contract (task names, routes, beat), logging, metrics.
Imports only service.domain; the workers' task names live here as strings, the one tie back to workers/."""
