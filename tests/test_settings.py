"""The settings: typed once at start-up, and documented where users look."""

from pathlib import Path

import pytest

from fxchat.settings import SETTINGS, load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("document", ["README.rst", "docs/operations.rst"])
def test_every_setting_is_documented_with_its_default(document):
    text = ROOT.joinpath(document).read_text()
    for setting in SETTINGS:
        row = next(
            (line for line in text.splitlines() if line.startswith(f"``fxchat.{setting.name}``")),
            None,
        )
        assert row is not None, f"fxchat.{setting.name} missing from {document}"
        default = setting.default
        shown = " ".join(default) if isinstance(default, tuple) else str(default)
        assert (f"``{shown}``" in row) if shown else ("(empty)" in row)


def test_settings_are_parsed_to_their_types():
    settings = load_settings(
        {
            "fxchat.max_ttl": "60",
            "fxchat.ratelimit.enabled": "no",
            "fxchat.cors_origins": "https://a.example, https://b.example",
        }
    )
    assert settings.max_ttl == 60
    assert settings.ratelimit_enabled is False
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.default_ttl == 7 * 24 * 3600


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"fxchat.max_tll": "60"}, "unknown settings: fxchat.max_tll"),
        ({"fxchat.registration": "maybe"}, "fxchat.registration"),
        ({"fxchat.max_ttl": "a week"}, "fxchat.max_ttl"),
    ],
)
def test_a_wrong_setting_stops_the_server(raw, message):
    with pytest.raises(ValueError, match=message):
        load_settings(raw)
