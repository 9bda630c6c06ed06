"""The settings: typed once at start-up, and documented where users look."""

from pathlib import Path

import pytest

from fxchat.models import get_engine
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
    assert settings.pg_random_page_cost == 1.1
    assert load_settings({"fxchat.pg_random_page_cost": ""}).pg_random_page_cost is None


@pytest.mark.parametrize("configured, expected", [("2.5", "2.5"), ("", "4")])
def test_postgresql_connections_get_the_random_page_cost(postgresql_url, configured, expected):
    # "" leaves the server's own value: PostgreSQL's default is 4.
    settings = load_settings({"fxchat.pg_random_page_cost": configured})
    engine = get_engine(
        {"sqlalchemy.url": postgresql_url}, pg_random_page_cost=settings.pg_random_page_cost
    )
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW random_page_cost").scalar() == expected
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"fxchat.max_tll": "60"}, "unknown settings: fxchat.max_tll"),
        ({"fxchat.registration": "maybe"}, "fxchat.registration"),
        ({"fxchat.max_ttl": "a week"}, "fxchat.max_ttl"),
        ({"fxchat.pg_random_page_cost": "-1"}, "fxchat.pg_random_page_cost"),
    ],
)
def test_a_wrong_setting_stops_the_server(raw, message):
    with pytest.raises(ValueError, match=message):
        load_settings(raw)
