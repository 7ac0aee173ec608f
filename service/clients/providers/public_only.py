"""Connections that reach public addresses only: the connect-time half of service/domain/public_address.py.

A store's own channel address is checked when saved, but a name can resolve elsewhere later
(DNS rebinding): every connection resolves and checks it again, then checks the peer it really
connected to, before a byte of the request (or the SMTP conversation) goes out.

- `public_session()`: a requests.Session whose HTTP(S) connections do this (urllib3's `_new_conn`);
- `PublicSMTP`, `PublicSMTP_SSL`: smtplib's clients doing the same (`_get_socket`).
A refused address raises DeliveryPermanentError (`non_public_address`): it is no OSError, so
urllib3, requests and smtplib let it through untouched, and the channel fails for good at once.
"""
from __future__ import annotations

import smtplib

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from service.domain.public_address import RefusedAddress, check_host, check_peer
from service.clients.providers.base import NON_PUBLIC_ADDRESS, DeliveryPermanentError


def _checked(host: str, port: int, connect):
    try:
        check_host(host, port)
        sock = connect()
        try:
            check_peer(sock.getpeername()[0], host)
        except RefusedAddress:
            sock.close()
            raise
    except RefusedAddress as exc:
        raise DeliveryPermanentError(f"refused to connect: {exc}", NON_PUBLIC_ADDRESS) from None
    return sock


class _PublicConnection:
    def _new_conn(self):
        return _checked(self._dns_host, self.port, super()._new_conn)


class PublicHTTPConnection(_PublicConnection, HTTPConnection):
    pass


class PublicHTTPSConnection(_PublicConnection, HTTPSConnection):
    pass


class _PublicHTTPPool(HTTPConnectionPool):
    ConnectionCls = PublicHTTPConnection


class _PublicHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = PublicHTTPSConnection


class PublicOnlyAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _PublicHTTPPool, "https": _PublicHTTPSPool}

    def proxy_manager_for(self, proxy, **kwargs):
        # Through a proxy the peer would be the proxy, and the check would mean nothing.
        raise DeliveryPermanentError("refused to connect through a proxy: channel addresses are checked "
                                     "connection by connection", NON_PUBLIC_ADDRESS)


def public_session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no HTTP(S)_PROXY from the environment: see proxy_manager_for
    for prefix in ("http://", "https://"):
        session.mount(prefix, PublicOnlyAdapter())
    return session


class PublicSMTP(smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        return _checked(host, port, lambda: super(PublicSMTP, self)._get_socket(host, port, timeout))


class PublicSMTP_SSL(smtplib.SMTP_SSL, PublicSMTP):
    """SMTP_SSL wraps the socket PublicSMTP made and checked (the MRO puts PublicSMTP between
    SMTP_SSL and SMTP): the TLS handshake starts only with a public peer."""
