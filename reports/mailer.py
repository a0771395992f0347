"""Sending mail the way the PBX does: its SMTP settings (`m_PbxSettings` Mail* keys, as the
admin set them in "Mail settings"), unless the module's `[mail]` settings name a server."""
from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from pathlib import Path

from mirror.settings import Settings
from pbx.config import SourceError, read_pbx_settings

TIMEOUT_S = 30


class MailError(Exception):
    """Mail could not be sent (settings missing, server unreachable or refusing)."""


@dataclass(frozen=True)
class MailSettings:
    host: str
    port: int
    encryption: str          # none | tls (STARTTLS) | ssl
    cert_check: bool
    username: str
    password: str
    sender: str
    sender_name: str

    @property
    def where(self) -> str:
        return f"SMTP {self.host}:{self.port}"


def mail_settings(settings: Settings) -> MailSettings:
    """The module's `[mail]` settings when `mail.host` is set, else the PBX's own."""
    if settings["mail.host"]:
        m = settings.section("mail")
        return MailSettings(m["host"], m["port"], m["encryption"], m["cert_check"],
                            m["username"], m["password"], m["sender"] or m["username"],
                            m["sender_name"])
    return pbx_mail_settings(settings["pbx.config_db"])


def pbx_settings(config_db: Path) -> dict[str, str]:
    """`m_PbxSettings` of the PBX (read each time: the admin may change them any moment)."""
    try:
        return read_pbx_settings(config_db)
    except SourceError as exc:
        raise MailError(f"PBX settings unreadable ({exc})") from None


def pbx_mail_settings(config_db: Path) -> MailSettings:
    """MikoPBX's mail settings, as its own notifications use them."""
    values = pbx_settings(config_db)
    host = (values.get("MailSMTPHost") or "").strip()
    if not host:
        raise MailError("mail is not set up: fill in the SMTP server in the PBX's mail settings "
                        "(or set mail.host in the module's settings)")
    try:
        port = int(values.get("MailSMTPPort") or 25)
    except ValueError:
        raise MailError(f"the PBX's SMTP port {values.get('MailSMTPPort')!r} is not a "
                        f"number") from None
    # 'tls' (and the older '1') is STARTTLS, 'ssl' implicit TLS, anything else none.
    use_tls = (values.get("MailSMTPUseTLS") or "none").strip().lower()
    encryption = {"ssl": "ssl", "tls": "tls", "1": "tls"}.get(use_tls, "none")
    username = values.get("MailSMTPUsername") or ""
    return MailSettings(host, port, encryption, values.get("MailSMTPCertCheck") == "1",
                        username, values.get("MailSMTPPassword") or "",
                        values.get("MailSMTPSenderAddress") or username,
                        values.get("MailSMTPFromUsername") or "MikoPBX notification")


def message(mail: MailSettings, to: list[str], subject: str, body: str,
            attachment: tuple[Path, str, str] | None = None) -> EmailMessage:
    """A plain-text mail, optionally with one file: (path, file name, media type with its
    parameters, as `text/csv; charset=utf-8`)."""
    if not mail.sender:
        raise MailError("mail has no sender address: set it in the PBX's mail settings "
                        "(or mail.sender)")
    msg = EmailMessage()
    msg["From"] = formataddr((mail.sender_name, mail.sender))
    msg["To"] = ", ".join(to)
    msg["Subject"] = " ".join(subject.split())
    msg["Date"] = formatdate(localtime=True)
    msg["Message-ID"] = make_msgid(domain=mail.sender.rpartition("@")[2] or None)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body)
    if attachment is not None:
        path, name, media_type = attachment
        kind = policy.default.header_factory("Content-Type", media_type)
        msg.add_attachment(path.read_bytes(), maintype=kind.maintype, subtype=kind.subtype,
                           params=dict(kind.params), filename=name)
    return msg


def send(mail: MailSettings, msg: EmailMessage) -> list[str]:
    """Hand the mail to the SMTP server; returns the recipients it refused while taking the
    rest. MailError says what went wrong when nobody got it."""
    context = ssl.create_default_context()
    if not mail.cert_check:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        if mail.encryption == "ssl":
            smtp = smtplib.SMTP_SSL(mail.host, mail.port, timeout=TIMEOUT_S, context=context)
        else:
            smtp = smtplib.SMTP(mail.host, mail.port, timeout=TIMEOUT_S)
        with smtp:
            if mail.encryption == "tls":
                smtp.starttls(context=context)
            if mail.username:
                smtp.login(mail.username, mail.password)
            refused = smtp.send_message(msg)
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        raise MailError(f"{mail.where} refused: {exc.smtp_code} {text}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise MailError(f"{mail.where} refused every recipient: "
                        f"{', '.join(exc.recipients)}") from None
    except OSError as exc:
        raise MailError(f"{mail.where}: {exc.strerror or exc}") from None
    except smtplib.SMTPException as exc:
        raise MailError(f"{mail.where}: {exc}") from None
    return sorted(refused)
