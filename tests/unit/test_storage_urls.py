"""DATABASE_URL and REDIS_URL that cannot be parsed are configuration errors that never quote
the password (the parsers' own errors would)."""

import pytest

from ai_gateway.app import shared_redis
from ai_gateway.db.engine import database_url
from ai_gateway.errors import ConfigurationError
from tests.conftest import make_settings


def test_a_database_url_whose_password_breaks_the_port_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        database_url("postgresql://user:p@ss:xyzzy@db.internal/gateway")

    assert "xyzzy" not in str(caught.value)
    assert str(caught.value).startswith("DATABASE_URL is not a database URL")


def test_a_redis_url_whose_password_breaks_it_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as caught:
        shared_redis(make_settings(redis_url="redis://:pa/ss@cache.internal:6379"))

    assert "pa" not in str(caught.value).replace("password", "")
    assert str(caught.value).startswith("REDIS_URL is not a Redis URL")


def test_no_redis_url_is_no_client() -> None:
    assert shared_redis(make_settings()) is None
