"""Config keys of the accounts area (homeserver/config/email.py, registration_checks.py,
oidc.py): what an operator writes for mail, captcha, consent and single sign-on, and
each mistake reported at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeserver.config.model import ConfigError
from homeserver.config.parse import parse_config


def test_email_section_and_the_3pid_keys(tmp_path: Path) -> None:
    """What an operator writes for mail (Synapse's keys), and each mistake reported."""
    config = parse_config(
        {
            "server_name": "a.b",
            "public_baseurl": "https://matrix.a.b/",
            "email": {
                "smtp_host": "mail.a.b",
                "smtp_port": 587,
                "smtp_user": "u",
                "smtp_pass": "p",
                "require_transport_security": True,
                "notif_from": "Matrix <noreply@a.b>",
                "validation_token_lifetime": "30m",
            },
            "enable_registration": True,
            "registrations_require_3pid": ["email"],
            "allowed_local_3pids": [{"medium": "email", "pattern": ".*@a\\.b$"}],
            "next_link_domain_whitelist": ["App.A.B"],
        },
        base_dir=tmp_path,
    )
    email = config.threepids.email
    assert email is not None
    assert (email.smtp.host, email.smtp.port, email.smtp.user) == ("mail.a.b", 587, "u")
    assert email.smtp.require_transport_security and email.validation_token_lifetime_ms == 1_800_000
    assert config.registration.requires_email and config.registration.offers_email
    assert config.threepids.next_link_hosts == frozenset({"app.a.b"})
    assert config.threepids.allowed_local[0].pattern.match("x@a.b")
    # Empty section: no mail, as without one.
    assert (
        parse_config({"server_name": "a.b", "email": {}}, base_dir=tmp_path).threepids.email is None
    )

    with pytest.raises(ConfigError) as exc:
        parse_config(
            {
                "server_name": "a.b",
                "email": {"smtp_port": 0, "notif_from": "no address", "client_base_url": "x"},
                "registrations_require_3pid": ["msisdn"],
                "allowed_local_3pids": [{"medium": "email", "pattern": "("}],
            },
            base_dir=tmp_path,
        )
    text = "\n".join(exc.value.problems)
    for expected in (
        "email.smtp_port",
        "email.notif_from: not an email address",
        "email.client_base_url: expected an http(s) URL",
        "registrations_require_3pid: only email can be required",
        "allowed_local_3pids[0].pattern: not a regular expression",
        "email: needs public_baseurl",
    ):
        assert expected in text, expected
    with pytest.raises(ConfigError) as exc:
        parse_config(
            {"server_name": "a.b", "registrations_require_3pid": ["email"]}, base_dir=tmp_path
        )
    assert "needs an email section" in "\n".join(exc.value.problems)


def test_captcha_and_consent_keys(tmp_path: Path) -> None:
    (tmp_path / "policy" / "en").mkdir(parents=True)
    (tmp_path / "policy" / "en" / "2.html").write_text("policy")
    (tmp_path / "private.key").write_text("from-file\n")
    config = parse_config(
        {
            "server_name": "a.b",
            "public_baseurl": "https://m.a.b/",
            "enable_registration": True,
            "enable_registration_captcha": True,
            "recaptcha_public_key": "pub",
            "recaptcha_private_key_path": "private.key",
            "user_consent": {
                "template_dir": "policy",
                "version": 2,
                "require_at_registration": True,
            },
        },
        base_dir=tmp_path,
    )
    captcha, consent = config.registration.captcha, config.registration.consent
    assert captcha is not None and (captcha.public_key, captcha.private_key) == ("pub", "from-file")
    assert consent is not None and consent.policy_file == tmp_path / "policy" / "en" / "2.html"
    with pytest.raises(ConfigError) as exc:
        parse_config(
            {
                "server_name": "a.b",
                "enable_registration_captcha": True,
                "user_consent": {
                    "template_dir": "policy",
                    "version": "9",
                    "block_events_error": "x",
                },
            },
            base_dir=tmp_path,
        )
    text = "\n".join(exc.value.problems)
    for expected in (
        "enable_registration_captcha: needs recaptcha_public_key",
        "user_consent.block_events_error: not built here",
        "user_consent.version: no policy file",
    ):
        assert expected in text, expected


def test_oidc_providers(tmp_path: Path) -> None:
    config = parse_config(
        {
            "server_name": "a.b",
            "public_baseurl": "https://m.a.b/",
            "oidc_providers": [
                {
                    "idp_id": "company",
                    "idp_name": "Company",
                    "issuer": "https://login.a.b/",
                    "client_id": "matrix",
                    "client_secret": "s",
                    "attribute_requirements": [{"attribute": "groups", "value": "staff"}],
                    "user_mapping_provider": {
                        "config": {"localpart_template": "{{ user.email | localpart_from_email }}"}
                    },
                }
            ],
            "sso": {"client_whitelist": ["https://app.a.b/"]},
        },
        base_dir=tmp_path,
    )
    [provider] = config.sso.providers
    assert provider.idp_id == "oidc-company" and provider.scopes == ("openid",)
    assert provider.attribute_requirements == (("groups", "staff"),)
    assert config.sso.client_whitelist == ("https://app.a.b/",)
    with pytest.raises(ConfigError) as exc:
        parse_config(
            {
                "server_name": "a.b",
                "oidc_providers": [
                    {
                        "issuer": "http://plain.a.b/",
                        "client_id": "m",
                        "client_secret_jwt_key": {"key": "k"},
                        "user_mapping_provider": {
                            "config": {"localpart_template": "{% if x %}{{ user.sub | upper }}"}
                        },
                    }
                ],
            },
            base_dir=tmp_path,
        )
    text = "\n".join(exc.value.problems)
    for expected in (
        "oidc_providers[0].issuer: must be an https URL",
        "oidc_providers[0].client_secret_jwt_key: not built here",
        "oidc_providers[0].client_secret: required with client_secret_basic",
        "localpart_template: only {{ user.<claim> }}",
        "unknown filter 'upper'",
        "oidc_providers: needs public_baseurl",
    ):
        assert expected in text, expected
