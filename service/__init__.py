"""The shared library and the HTTP face: config, domain, state, clients, ops, web (+ cli.py, the operator CLI).
Layers import downwards only (web|cli > ops > clients > state > config > domain) and never workers/ (import-linter)."""
