"""Local tooling: the Salla sandbox, an embedded Redis, the `make run` launcher and `make demo`.

Nothing here runs in production; it lets a newcomer see the product work without a Salla
account and lets the tests use real HTTP and a real Redis.
"""
