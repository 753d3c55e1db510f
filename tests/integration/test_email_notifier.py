"""The e-mail notifier against a real SMTP server (aiosmtpd) on loopback.

The delivery worker retries or gives up on the outcome class alone, so these tests
pin down which SMTP answer becomes which outcome: a 4xx (SMTP's "try later") and
network trouble are ``Retryable``, a 5xx is a ``PermanentFailure`` whose reason
names the code. They also check the mail that arrives, in each transport mode
(plain, STARTTLS and implicit TLS), with a throw-away self-signed certificate that
the notifier trusts only through ``SmtpConfig.ssl_context``, and they show that an
untrusted certificate, a closed port or a stalled server end in an outcome, never in
an exception or a hang.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from notifiers.base import Delivered, DeliveryResult, Message, PermanentFailure, Retryable
from notifiers.email import EmailNotifier, SmtpConfig
from tests.conftest import SmtpSink, free_port

HOST = "127.0.0.1"
SENDER = "Tickwatch <alerts@tickwatch.test>"
RECIPIENT = "kim@example.com"
SUBJECT = "[Tickwatch] 삼성전자(005930) 목표가 도달"
TEXT = "삼성전자가 75,000원에 도달했습니다.\n조건: 현재가 ≥ 75,000원"
HTML = "<p><b>삼성전자</b>가 75,000원에 도달했습니다.</p>"
USER = "tickwatch"
PASSWORD = "s3cr3t-비밀-pass"
MESSAGE_ID = re.compile(r"^<[0-9a-f]{32}@tickwatch\.test>$")


# --- a throw-away certificate ------------------------------------------------------------


@dataclass(frozen=True)
class Certificate:
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """Trusts this one certificate (and checks the host name against it)."""
        return ssl.create_default_context(cafile=str(self.cert_file))


def _self_signed(directory: Path) -> Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp.crt", directory / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Certificate(cert_file, key_file)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return _self_signed(tmp_path_factory.mktemp("smtp-tls"))


# --- a scriptable SMTP server -------------------------------------------------------------


@dataclass
class ScriptedSink(SmtpSink):
    """``SmtpSink`` that can answer RCPT/DATA with a scripted reply or stall DATA, and
    records whether each accepted mail came over TLS and who had logged in."""

    rcpt_reply: str | None = None
    data_reply: str | None = None
    data_delay: float = 0.0
    raw: list[bytes] = field(default_factory=list)
    over_tls: list[bool] = field(default_factory=list)
    logins: list[object] = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.rcpt_reply is not None:
            return self.rcpt_reply
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        if self.data_reply is not None:
            return self.data_reply
        self.raw.append(envelope.original_content or envelope.content)
        self.over_tls.append(server.transport.get_extra_info("ssl_object") is not None)
        self.logins.append(session.auth_data)
        return await super().handle_DATA(server, session, envelope)


def _authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    """Accepts exactly USER / PASSWORD (LOGIN or PLAIN)."""
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login.decode(),
        auth_data.password.decode(),
    ) == (USER, PASSWORD)
    return AuthResult(success=ok, auth_data=USER if ok else None, handled=False)


Serve = Callable[..., ScriptedSink]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Starts an aiosmtpd ``Controller`` per call (keyword arguments go to it, except the
    sink's own script: rcpt_reply, data_reply, data_delay); all stopped at the end."""
    controllers: list[Controller] = []

    def start(
        rcpt_reply: str | None = None,
        data_reply: str | None = None,
        data_delay: float = 0.0,
        **controller_kwargs: Any,
    ) -> ScriptedSink:
        sink = ScriptedSink(
            HOST, free_port(), rcpt_reply=rcpt_reply, data_reply=data_reply, data_delay=data_delay
        )
        controller = Controller(sink, hostname=sink.host, port=sink.port, **controller_kwargs)
        controller.start()
        controllers.append(controller)
        return sink

    yield start
    for controller in controllers:
        controller.stop()


def notifier(port: int, security: str = "none", **config: Any) -> EmailNotifier:
    config.setdefault("timeout", 5.0)
    return EmailNotifier(
        SmtpConfig(host=HOST, port=port, security=security, sender=SENDER, **config)
    )


def message(key: str = "event-1.email") -> Message:
    return Message(RECIPIENT, SUBJECT, TEXT, HTML, key)


def _server_kwargs(security: str, certificate: Certificate) -> dict[str, Any]:
    if security == "starttls":
        return {"tls_context": certificate.server_context(), "require_starttls": True}
    if security == "tls":
        # aiosmtpd 1.4: ``ssl_context`` on the Controller wraps the listening socket.
        return {"ssl_context": certificate.server_context()}
    return {}


# --- 1. what arrives, in each mode --------------------------------------------------------


@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
async def test_a_mail_arrives_with_both_parts_and_a_key_derived_message_id(
    serve: Serve, certificate: Certificate, security: str
) -> None:
    """The mail a user gets must carry the Korean texts intact in both parts in every
    transport mode, and a resend with the same key must have the same Message-ID so a
    mail client shows it once, while another event gets its own."""
    sink = serve(**_server_kwargs(security, certificate))
    mailer = notifier(sink.port, security, ssl_context=certificate.client_context())

    outcomes = [
        await mailer.send(message("event-1.email")),
        await mailer.send(message("event-1.email")),
        await mailer.send(message("event-2.email")),
    ]

    assert outcomes == [Delivered(), Delivered(), Delivered()]
    assert sink.envelopes == [("alerts@tickwatch.test", [RECIPIENT])] * 3
    # The transport really was what the mode says (STARTTLS is enforced by the server).
    assert sink.over_tls == [security != "none"] * 3
    first, again, other = sink.messages
    for mail, key in ((first, "event-1.email"), (again, "event-1.email"), (other, "event-2.email")):
        assert mail["From"] == SENDER
        assert mail["To"] == RECIPIENT
        assert mail["Subject"] == SUBJECT
        assert mail["X-Tickwatch-Key"] == key
        assert mail.get_content_type() == "multipart/alternative"
        parts = [part.get_content_type() for part in mail.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        plain, html = mail.get_body(("plain",)), mail.get_body(("html",))
        assert plain is not None and html is not None
        assert plain.get_content_charset() == "utf-8"
        # On the wire lines end in CRLF (RFC 5322); the texts are otherwise intact.
        assert plain.get_content().replace("\r\n", "\n") == TEXT + "\n"
        assert html.get_content().replace("\r\n", "\n") == HTML + "\n"
        assert MESSAGE_ID.match(mail["Message-ID"]), mail["Message-ID"]
    assert first["Message-ID"] == again["Message-ID"]
    assert first["Message-ID"] != other["Message-ID"]
    # The Korean subject went over the wire as an RFC 2047 encoded word, not raw bytes.
    subject_line = next(
        line for line in sink.raw[0].split(b"\r\n") if line.lower().startswith(b"subject:")
    )
    assert subject_line.isascii() and b"=?utf-8?" in subject_line.lower()


# --- 2. STARTTLS demanded, client speaks plain --------------------------------------------


async def test_a_server_that_demands_starttls_refuses_a_plain_client_for_good(
    serve: Serve, certificate: Certificate
) -> None:
    """aiosmtpd answers MAIL with "530 Must issue a STARTTLS command first": a 5xx that no
    retry changes (the config is wrong), so it is permanent and the reason says 530."""
    sink = serve(tls_context=certificate.server_context(), require_starttls=True)

    outcome = await notifier(sink.port, "none").send(message())

    assert isinstance(outcome, PermanentFailure)
    assert outcome.reason.startswith("SMTP 530: ")
    assert "STARTTLS" in outcome.reason
    assert outcome.gone is False
    assert sink.messages == []


# --- 3. AUTH --------------------------------------------------------------------------------


def _auth_server(serve: Serve, certificate: Certificate) -> ScriptedSink:
    return serve(
        tls_context=certificate.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=_authenticator,
    )


async def test_the_right_credentials_over_starttls_deliver(
    serve: Serve, certificate: Certificate
) -> None:
    """A submission server (port 587 style) needs STARTTLS and then AUTH: with the right
    login the mail is accepted, over TLS, as that user."""
    sink = _auth_server(serve, certificate)
    mailer = notifier(
        sink.port,
        "starttls",
        username=USER,
        password=PASSWORD,
        ssl_context=certificate.client_context(),
    )

    assert await mailer.send(message()) == Delivered()
    assert sink.logins == [USER]
    assert sink.over_tls == [True]
    assert sink.messages[0]["Subject"] == SUBJECT


@pytest.mark.parametrize(
    ("username", "password"),
    [(USER, "wrong-password-123"), ("nobody", PASSWORD)],
    ids=["wrong-password", "wrong-user"],
)
async def test_wrong_credentials_fail_for_good_without_leaking_the_password(
    serve: Serve, certificate: Certificate, username: str, password: str
) -> None:
    """535 will not change on retry; and the reason ends up in the delivery row and the
    logs, so it must not carry the password that was tried."""
    sink = _auth_server(serve, certificate)
    mailer = notifier(
        sink.port,
        "starttls",
        username=username,
        password=password,
        ssl_context=certificate.client_context(),
    )

    outcome = await mailer.send(message())

    assert outcome == PermanentFailure("SMTP authentication failed (535)")
    assert password not in outcome.reason
    assert sink.messages == []


async def test_a_server_that_requires_auth_refuses_an_anonymous_client_for_good(
    serve: Serve, certificate: Certificate
) -> None:
    """No username configured for a server that needs one: "530 5.7.0 Authentication
    required" at MAIL, a configuration error, hence permanent."""
    sink = _auth_server(serve, certificate)
    mailer = notifier(sink.port, "starttls", ssl_context=certificate.client_context())

    outcome = await mailer.send(message())

    assert isinstance(outcome, PermanentFailure)
    assert outcome.reason.startswith("SMTP 530: ")
    assert "Authentication required" in outcome.reason
    assert sink.messages == []


# --- 4. refusals: 4xx is "later", 5xx is "never" --------------------------------------------


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            {"rcpt_reply": "451 4.3.0 try again later"},
            Retryable("recipient deferred: 451 4.3.0 try again later"),
        ),
        (
            {"rcpt_reply": "421 4.3.2 Service not available"},
            Retryable("recipient deferred: 421 4.3.2 Service not available"),
        ),
        (
            {"data_reply": "451 4.3.0 try again later"},
            Retryable("SMTP 451: 4.3.0 try again later"),
        ),
        (
            {"data_reply": "421 4.3.2 Service not available"},
            Retryable("SMTP 421: 4.3.2 Service not available"),
        ),
    ],
    ids=["rcpt-451", "rcpt-421", "data-451", "data-421"],
)
async def test_a_temporary_refusal_is_retried_with_the_code_in_the_reason(
    serve: Serve, script: dict[str, str], expected: Retryable
) -> None:
    """A 4xx (greylisting, a busy or shutting-down server) is SMTP's "429": the same
    mail will be taken later, so giving up on it would lose an alert. At RCPT this
    used to come out as a PermanentFailure "recipient refused"."""
    sink = serve(**script)

    outcome = await notifier(sink.port).send(message())

    assert outcome == expected
    assert sink.messages == []


async def test_a_recipient_refused_for_good_is_permanent(serve: Serve) -> None:
    """550 at RCPT: the mailbox does not exist; the reason starts with "recipient
    refused" (the verification flow keys on that) and names the code."""
    sink = serve(rcpt_reply="550 5.1.1 mailbox unavailable")

    outcome = await notifier(sink.port).send(message())

    assert outcome == PermanentFailure("recipient refused: 550 5.1.1 mailbox unavailable")
    assert sink.messages == []


async def test_a_message_rejected_at_data_is_permanent(serve: Serve) -> None:
    """554 after DATA (content policy): resending the same bytes gets the same answer."""
    sink = serve(data_reply="554 5.7.1 message rejected as spam")

    outcome = await notifier(sink.port).send(message())

    assert outcome == PermanentFailure("SMTP 554: 5.7.1 message rejected as spam")
    assert sink.messages == []


# --- 5. a stalled server --------------------------------------------------------------------


async def test_a_server_that_stalls_after_data_is_retried_within_the_timeout(
    serve: Serve,
) -> None:
    """The delivery worker must not hang on one stuck relay: the configured timeout ends
    the wait, and since the server may still take the mail later, it is retryable."""
    sink = serve(data_delay=2.0)
    mailer = notifier(sink.port, timeout=0.5)

    started = time.monotonic()
    outcome = await mailer.send(message())
    elapsed = time.monotonic() - started

    assert isinstance(outcome, Retryable), outcome
    assert outcome.reason.startswith("SMTPReadTimeoutError: ")
    assert elapsed < 1.5, f"took {elapsed:.2f}s with a 0.5s timeout"
    assert sink.messages == []


# --- 6. nobody there, or somebody we do not trust --------------------------------------------


async def test_a_closed_port_is_retried() -> None:
    """Nothing listening (relay restarting): a network error, retried later."""
    port = free_port()
    outcome = await notifier(port).send(message())

    assert isinstance(outcome, Retryable), outcome
    assert outcome.reason.startswith("SMTPConnectError: ")
    assert f"on port {port}" in outcome.reason


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_an_untrusted_certificate_is_an_outcome_naming_the_certificate(
    serve: Serve, certificate: Certificate, security: str
) -> None:
    """Without ``ssl_context`` the notifier trusts only the system CAs, which do not
    include our self-signed certificate: the send must stop before any mail goes out
    and say why. It is ``Retryable`` (like any failure to reach the relay), since
    whoever runs the relay can fix the certificate and the alert is then still sent."""
    sink = serve(**_server_kwargs(security, certificate))

    outcome: DeliveryResult = await notifier(sink.port, security).send(message())

    assert isinstance(outcome, Retryable), outcome
    assert "[SSL: CERTIFICATE_VERIFY_FAILED]" in outcome.reason
    assert "self-signed certificate" in outcome.reason
    assert sink.messages == []
