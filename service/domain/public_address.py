"""A store's outbound addresses reach the public internet only (no SSRF through a channel URL).

What an admin sets for a store (service/state/channel_settings.py: `webhook.url`, `whatsapp.api_url`,
`sms.api_url`, `email.smtp_url`) is checked twice:
- when saved (`check_url`): https:// only (http:// only with ALLOW_PRIVATE_URLS=1, for the local
  fakes), no user:password@ in an HTTP URL (the SMTP URL carries its login by design), and a
  host that is, or resolves to, a non-public address is refused with the reason. A name that
  does not resolve now is accepted: it reaches nothing, and the connect-time check holds.
- when connecting (service/clients/providers/public_only.py): the name is resolved again and the peer
  actually connected to is checked, since DNS can point elsewhere after the save (rebinding).
ALLOW_PRIVATE_URLS=1 lifts both, for local development only. The environment's own defaults
(REMINDER_WEBHOOK_URL, SMTP_URL, ...) are the operator's and are not restricted.
"""
from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse

HTTP_SCHEMES = ("http", "https")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known NAT64 prefix embeds an IPv4 address


class RefusedAddress(ValueError):
    """An outbound address a store may not use; the message says why."""


def why_not_public(address: str) -> str | None:
    """None for a public address, else what it is ("loopback", "private", ...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # a link-local IPv6 address may carry %scope
    if ip.version == 6:
        # An IPv6 address that carries an IPv4 one reaches that IPv4 address: judge it instead.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
                                                      if ip in _NAT64 else None)
        if embedded is not None:
            ip = embedded
    for test, word in (("is_unspecified", "unspecified"), ("is_loopback", "loopback"),
                       ("is_link_local", "link-local"), ("is_multicast", "multicast"),
                       ("is_private", "private"), ("is_reserved", "reserved")):
        if getattr(ip, test):
            return word
    return None if ip.is_global else "special-purpose"  # e.g. 100.64.0.0/10, shared by carriers' NATs


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to now (a literal address resolves to itself)."""
    return sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def check_host(host: str, port: int) -> None:
    """RefusedAddress when `host` is or resolves to any non-public address. A name that does
    not resolve passes: nothing can be reached through it (the caller's connection fails)."""
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError):  # socket.gaierror is an OSError
        return
    for address in addresses:
        check_peer(address, host)


def check_peer(address: str, host: str) -> None:
    """RefusedAddress when `address` (what `host` resolved or connected to) is not public."""
    why = why_not_public(address)
    if why:
        named = host if host.strip("[]") == address else f"{host} resolves to {address}, which"
        raise RefusedAddress(f"{named} is not a public address ({why}); only public addresses are allowed "
                             "(ALLOW_PRIVATE_URLS=1 allows others, for local development only)")


def check_url(url: str, allow_private: bool) -> None:
    """The save-time rules above; RefusedAddress says which one `url` breaks."""
    parts = urlparse(url)
    if parts.scheme in HTTP_SCHEMES:
        if parts.username is not None or parts.password is not None:
            raise RefusedAddress("must not carry a user name or password (user:password@host)")
        if parts.scheme != "https" and not allow_private:
            raise RefusedAddress("must be an https:// URL (http:// only with ALLOW_PRIVATE_URLS=1, for local "
                                 "development)")
    if allow_private:
        return
    try:
        port = parts.port or {"https": 443, "http": 80, "smtps": 465}.get(parts.scheme, 25)
    except ValueError:
        raise RefusedAddress("has a port that is not a number") from None
    check_host(parts.hostname or "", port)
