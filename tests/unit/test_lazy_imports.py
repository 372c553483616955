"""Libraries only some set-ups use are imported only by those: a gateway without Redis loads
no redis-py, one on the native transport no Cerebras SDK (each several MiB per process)."""

from pathlib import Path

import pytest

from tests.fresh_interpreter import last_line

OPTIONAL = ("redis", "cerebras.cloud.sdk")


def loaded_after_start_up(tmp_path: Path, settings: str) -> list[str]:
    """The optional libraries in sys.modules once the CLI is imported and an app is built with
    `settings` (keyword arguments of make_settings)."""
    script = (
        "import sys\n"
        "import ai_gateway.cli\n"
        "from ai_gateway.app import create_app\n"
        "from tests.conftest import ONE_ATTEMPT, make_settings\n"
        f"create_app(make_settings({settings}), config=ONE_ATTEMPT)\n"
        f"print([name for name in {OPTIONAL!r} if name in sys.modules])\n"
    )
    return list(eval(last_line(script, tmp_path)))  # noqa: S307  # our own output


@pytest.mark.parametrize(
    ("settings", "loaded"),
    [
        ("", []),
        ("cerebras_mock='false', cerebras_api_key='csk-x'", []),
        ("redis_url='redis://127.0.0.1:6379/0'", ["redis"]),
        (
            "cerebras_mock='false', cerebras_api_key='csk-x', cerebras_client='sdk'",
            ["cerebras.cloud.sdk"],
        ),
    ],
)
def test_optional_libraries_load_only_for_the_set_ups_that_use_them(
    tmp_path: Path, settings: str, loaded: list[str]
) -> None:
    assert loaded_after_start_up(tmp_path, settings) == loaded
