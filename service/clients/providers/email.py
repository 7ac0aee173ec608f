"""E-mail over SMTP: multipart text + HTML from the store's templates, with List-Unsubscribe.

SMTP_URL / the store's `email.smtp_url`: `smtp://user:password@host:587` (STARTTLS whenever the
server offers it) or `smtps://...:465` (TLS from the start); no user, no login.
A store's own SMTP server is reached only at a public address (`public_only`: PublicSMTP).
Refusals: a recipient refused with 5xx is `undeliverable`; a bad login `credentials` (store
alarm); other 5xx `refused`; 4xx answers, timeouts and connection errors are transient.

smtplib applies its timeout to each socket operation, and a send is a dozen of them: one send
has one deadline instead (service/config/settings.py channel_send_seconds, issue 15), so that
it ends before the ledger's claim on the channel does. Each step gets only what is left of it,
and a timer shuts the connection down at the deadline whatever step is running.
"""
from __future__ import annotations

import smtplib
import socket
import ssl
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from urllib.parse import unquote, urlparse

from service.clients.providers.base import (CREDENTIALS, REFUSED, UNDELIVERABLE, DeliveryPermanentError,
                                    DeliveryTransientError, email_address)
from service.clients.providers.public_only import PublicSMTP, PublicSMTP_SSL
from service.config.settings import channel_send_seconds


def account_alarm(merchant_id: int) -> str:
    return f"smtp_account_{merchant_id}"


class EmailChannel:
    name = "email"

    def __init__(self, merchant_id: int, config: dict, timeout: float, renderer, store_name: str = "",
                 unsubscribe=lambda reminder: "", public_only: bool = False):
        self.merchant_id = merchant_id
        self.smtp_url = config["smtp_url"]
        self.sender = config["from"]
        self.reply_to = config.get("reply_to") or ""
        self.timeout = timeout
        self.renderer = renderer
        self.store_name = store_name
        self.unsubscribe = unsubscribe
        self.smtp, self.smtp_ssl = (PublicSMTP, PublicSMTP_SSL) if public_only else (smtplib.SMTP, smtplib.SMTP_SSL)

    def message(self, reminder: dict) -> EmailMessage:
        to = email_address(reminder)
        link = self.unsubscribe(reminder)
        rendered = self.renderer.render(reminder, self.store_name, link)
        message = EmailMessage()
        message["Subject"] = rendered.subject
        message["From"] = self.sender
        message["To"] = to
        if self.reply_to:
            message["Reply-To"] = self.reply_to
        message["Date"] = formatdate(localtime=False)
        domain = parseaddr(self.sender)[1].rpartition("@")[2] or "localhost"
        message["Message-ID"] = make_msgid(idstring=reminder["reminder_id"][:16], domain=domain)
        message["Content-Language"] = rendered.language
        message["X-Reminder-Id"] = reminder["reminder_id"]
        if link:
            # RFC 8058 one-click: mail clients POST `List-Unsubscribe=One-Click` to the link.
            message["List-Unsubscribe"] = f"<{link}>"
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message.set_content(rendered.text)
        message.add_alternative(rendered.html, subtype="html")
        return message

    def send(self, reminder: dict) -> str:
        message = self.message(reminder)
        url = urlparse(self.smtp_url)
        deadline = time.monotonic() + channel_send_seconds(self.timeout)

        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("SMTP send deadline passed")
            return min(self.timeout, remaining)

        def step(client) -> None:  # the next step may take only what is left
            if client.sock is not None:
                client.sock.settimeout(left())
            else:
                left()

        try:
            if url.scheme == "smtps":
                client = self.smtp_ssl(url.hostname, url.port or 465, timeout=left(),
                                       context=ssl.create_default_context())
            else:
                client = self.smtp(url.hostname, url.port or 25, timeout=left())
            watchdog = threading.Timer(max(deadline - time.monotonic(), 0.0), _shut_down, args=(client,))
            watchdog.daemon = True
            watchdog.start()
            try:
                with client:
                    step(client)
                    client.ehlo()
                    if url.scheme == "smtp" and client.has_extn("starttls"):
                        step(client)
                        client.starttls(context=ssl.create_default_context())
                        step(client)
                        client.ehlo()
                    if url.username:
                        step(client)
                        client.login(unquote(url.username), unquote(url.password or ""))
                    step(client)
                    client.send_message(message)
            finally:
                watchdog.cancel()
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryPermanentError(f"SMTP login refused: {exc.smtp_code}", CREDENTIALS, alarm=(
                account_alarm(self.merchant_id), f"merchant {self.merchant_id}: the SMTP server refuses the login "
                                                 f"({exc.smtp_code})")) from None
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0] if exc.recipients else 550
            if 400 <= code < 500:
                raise DeliveryTransientError(f"SMTP recipient deferred: {code}") from None
            raise DeliveryPermanentError(f"SMTP recipient refused: {code}", UNDELIVERABLE) from None
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise DeliveryTransientError(f"SMTP answered {exc.smtp_code}") from None
            raise DeliveryPermanentError(f"SMTP answered {exc.smtp_code}", REFUSED) from None
        except (smtplib.SMTPException, OSError) as exc:  # connection refused, timeouts, TLS trouble
            raise DeliveryTransientError(f"SMTP failed: {type(exc).__name__}") from None
        return message["Message-ID"].strip("<>")


def _shut_down(client) -> None:
    """The send's deadline passed mid-step: the socket is shut down, and the step fails (OSError)."""
    sock = getattr(client, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
