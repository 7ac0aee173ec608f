"""What the web's access log (WEB_ACCESS_LOG=1, service/web/gunicorn_conf.py) may show of a request.

Some URLs are secrets: an unsubscribe link's token acts for the shopper, a store's SMS
delivery-report token lets anyone post reports for it (providers sign nothing), and a query
string can carry a verify token (Meta's `hub.verify_token`). So the access line masks the
secret segments of those paths, every query value, and the headers that carry credentials.
Pure functions: gunicorn's logger calls `scrub_atoms` on the fields of each line.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "[redacted]"

# Every route with a secret in its path, `<...>` where any segment goes and `<token>` where
# the secret is. tests/unit/test_access_log.py checks that every Flask route with a `token`
# argument is listed here.
SECRET_ROUTES = (
    "/unsubscribe/<token>",
    "/channels/sms/<merchant_id>/dlr/<token>",
    "/channels/sms/dlr/<token>",  # the shared SMS account's one report URL
)
# Request headers (gunicorn's `{name}i` atoms) and WSGI environ entries (`{name}e`) whose
# value is a credential, whatever the log format asks for.
_CREDENTIAL = re.compile(r"(?i)auth|cookie|signature|token|secret|api[-_]?key")
_URL_ATOMS = frozenset({"referer", "http_referer", "raw_uri", "request_uri", "path_info", "script_name", "location"})


def _segments(route: str) -> list[str]:
    return [part for part in route.split("/") if part]


_PATTERNS = tuple(_segments(route) for route in SECRET_ROUTES)


def scrub_path(path: str) -> str:
    """The path with the secret segments of SECRET_ROUTES masked (empty segments, as in `//`,
    are kept but not counted, since a router may merge them)."""
    if not path:
        return path
    parts = path.split("/")
    filled = [i for i, part in enumerate(parts) if part]
    for pattern in _PATTERNS:
        if len(filled) < len(pattern):
            continue
        if all(want.startswith("<") or parts[filled[n]].lower() == want for n, want in enumerate(pattern)):
            for n, want in enumerate(pattern):
                if want == "<token>":
                    parts[filled[n]] = MASK
    return "/".join(parts)


def scrub_query(query: str) -> str:
    """Every value masked, the names kept (they tell what was sent); a bare item is masked whole."""
    if not query:
        return query
    items = re.split(r"([&;])", query)
    return "".join(item if item in ("&", ";") or not item else
                   (item.split("=", 1)[0] + "=" + MASK if "=" in item else MASK) for item in items)


def scrub_url(url: str) -> str:
    """A path with its query (`/x?y=z`, a raw request URI) or a full URL (a Referer)."""
    if not url or url == "-":
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed URL (an unclosed IPv6 bracket): show none of it
        return MASK
    return urlunsplit((parts.scheme, parts.netloc, scrub_path(parts.path), scrub_query(parts.query),
                       MASK if parts.fragment else ""))


def scrub_request_line(line: str) -> str:
    """`GET /unsubscribe/abc?x=1 HTTP/1.1` with its URI scrubbed."""
    method, sep, rest = line.partition(" ")
    uri, sep2, protocol = rest.rpartition(" ") if " " in rest else (rest, "", "")
    return f"{method}{sep}{scrub_url(uri)}{sep2}{protocol}"


def scrub_atoms(atoms: dict) -> dict:
    """gunicorn's access-log fields with every secret masked (a copy)."""
    clean = dict(atoms)
    for key, value in atoms.items():
        if not isinstance(value, str):
            continue
        if key == "U":
            clean[key] = scrub_path(value)
        elif key == "q":
            clean[key] = scrub_query(value)
        elif key == "r":
            clean[key] = scrub_request_line(value)
        elif key == "f":
            clean[key] = scrub_url(value)
        elif key.startswith("{") and key[-2:] in ("}i", "}e", "}o"):
            name = key[1:-2].lower()
            if name == "query_string":
                clean[key] = scrub_query(value)
            elif name in _URL_ATOMS:
                clean[key] = scrub_url(value)
            elif _CREDENTIAL.search(name):
                clean[key] = MASK
    return clean
