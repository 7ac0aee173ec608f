"""Outbound: the Salla client, OAuth, webhook subscriptions, channels and their providers, the broker publisher.
Imports service.state, service.config and service.domain; never the web, the CLI or workers/."""
