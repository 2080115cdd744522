"""Policy files: validated strictly; every error names the file, the line and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies import ConfigError, load_policy, parse_policy
from policies.schema import builtin_personal_providers

RULE = '\n[[rules]]\nid = "sender-personal-domain"\n'
BASE = '[domains]\nofficial = ["lamdong.gov.vn"]\n' + RULE


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_policy(text, "district.toml")
    return info.value


@pytest.mark.parametrize(
    ("text", "key", "line", "problem"),
    [
        (BASE + 'mdoe = "enforce"\n', "rules[0].mdoe", 6, "unknown key"),
        (
            BASE + 'protected_recipients = ["*.x.gov.vn"]\n',
            "rules[0].protected_recipients",
            6,
            "'*.x.gov.vn'",
        ),
        (
            BASE + 'public_recipients = ["a@x..gov.vn"]\n',
            "rules[0].public_recipients",
            6,
            "'a@x..gov.vn'",
        ),
        (
            BASE + 'mode = "monitor"\nenforce_from = 2027-01-01\n',
            "rules[0].enforce_from",
            7,
            'only with mode = "enforce"',
        ),
        (
            BASE.replace('id = "sender-personal-domain"', 'mode = "off"'),
            "rules[0].id",
            4,
            "missing",
        ),
        (BASE + 'mode = "enforcing"\n', "rules[0].mode", 6, "must be one of enforce, monitor, off"),
        (BASE + "enforce_from = 2027\n", "rules[0].enforce_from", 6, "must be a date"),
        (
            BASE + 'protected_recipients = "official"\n',
            "rules[0].protected_recipients",
            6,
            "a list of strings",
        ),
        (
            BASE + 'protected_recipients = ["a@b@c"]\n',
            "rules[0].protected_recipients",
            6,
            "'a@b@c'",
        ),
        (
            BASE + '\n[[rules]]\nid = "no-such-rule"\n',
            "rules[1].id",
            8,
            "unknown rule 'no-such-rule'",
        ),
        (BASE + '\n[[rules]]\nid = "sender-personal-domain"\n', "rules[1].id", 8, "listed twice"),
        ('[domains]\nofficial = ["gov vn"]\n' + RULE, "domains.official", 2, "'gov vn'"),
        (
            '[domains]\nofficial = ["gmail.com"]\n' + RULE,
            "domains.official",
            2,
            "also listed as personal",
        ),
        ("[domain]\n" + BASE, "domain", 1, "unknown key"),
        (
            '[citations]\n"sender.nope" = "x"\n' + BASE,
            "citations.sender.nope",
            2,
            "not a reason code",
        ),
        ("[domains]\nofficial = []\n", "domains.official", 2, "at least one"),
        ('[domains]\nofficial = ["gov.vn"]\n', "rules", None, "no rules"),
        ("[domains\n", "", 1, "not valid TOML"),
    ],
)
def test_policy_errors_name_file_line_and_key(
    text: str, key: str, line: int | None, problem: str
) -> None:
    """A misspelt or wrong value is an error that points at it; never a silent default."""
    err = error_of(text)
    assert err.source == "district.toml"
    assert err.key == key
    assert err.line == line
    assert problem in str(err)
    assert str(err).startswith(f"district.toml:{line}: " if line else "district.toml: ")


def test_default_policy_is_valid_and_ships_a_real_provider_list() -> None:
    """The shipped policy loads; its provider list has the big providers and at least 25 entries."""
    policy = load_policy()
    providers = builtin_personal_providers()
    assert len(providers) >= 25
    assert {
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.com.vn",
        "ymail.com",
        "hotmail.com",
        "outlook.com",
        "live.com",
        "icloud.com",
        "aol.com",
        "proton.me",
    } <= providers
    assert policy.personal_providers == providers
    assert [(r.id, r.mode.value) for r in policy.rules] == [
        ("sender-malformed-identity", "enforce"),
        ("sender-lookalike-identity", "enforce"),  # forgery, never a mistake
        ("sender-personal-domain", "enforce"),
        ("sender-official-unauthenticated", "monitor"),  # the issue: start in monitor
        ("advisory-public-service-registration", "enforce"),  # counted, never refused
        ("advisory-public-contact-in-body", "enforce"),
        ("document-exemption", "enforce"),
        ("document-signature-required", "enforce"),
    ]


def test_personal_list_can_be_extended_and_trimmed() -> None:
    """Districts add local providers and remove entries without copying the list."""
    text = (
        '[domains]\nofficial = ["gov.vn"]\npersonal_add = ["vnn.vn"]\n'
        'personal_remove = ["qq.com"]\n[[rules]]\nid = "sender-personal-domain"\n'
    )
    policy = parse_policy(text, "p.toml")
    assert policy.is_personal("vnn.vn") and not policy.is_personal("qq.com")
    assert policy.is_personal("GMAIL.com.")


def test_citation_override(tmp_path: Path) -> None:
    """A district cites its own directive in place of the table's default."""
    path = tmp_path / "p.toml"
    path.write_text(
        '[citations]\n"sender.personal_domain" = "Công văn số 12/UBND, mục 1"\n' + BASE,
        encoding="utf-8",
    )
    policy = load_policy(path)
    assert policy.citation("sender.personal_domain") == "Công văn số 12/UBND, mục 1"
    assert "Phù Mỹ" in policy.citation("sender.malformed_identity")
    assert policy.sha256 and policy.source == str(path)


def test_unreadable_policy_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file names itself."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")


def test_retention_cannot_cut_into_the_scoring_year() -> None:
    """A policy keeping records less than a year (366 days) is refused."""
    with pytest.raises(ConfigError, match=r"retention\.keep_days: must be at least 366"):
        parse_policy(
            '[domains]\nofficial = ["gov.vn"]\n[retention]\nkeep_days = 90\n'
            '[[rules]]\nid = "sender-personal-domain"\n',
            "p.toml",
        )
