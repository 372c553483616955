"""Settings: every environment variable the gateway reads, typed, with defaults."""

import os
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ai_gateway.config import constants
from ai_gateway.config.file import check_base_url
from ai_gateway.errors import ConfigurationError

ENV_FILE = ".env"


class Environment(StrEnum):
    """Where the gateway runs; production refuses unsafe defaults."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class MockMode(StrEnum):
    """How the Cerebras provider chooses between the real API and the deterministic mock."""

    AUTO = "auto"
    TRUE = "true"
    FALSE = "false"


class FailMode(StrEnum):
    """What limits do while Redis cannot be reached."""

    OPEN = "open"
    CLOSED = "closed"


class Settings(BaseSettings):
    """Gateway configuration from the environment (and an optional `.env` file)."""

    model_config = SettingsConfigDict(env_file=ENV_FILE, extra="ignore", frozen=True)

    cerebras_api_key: SecretStr | None = None
    cerebras_base_url: str | None = None
    cerebras_mock: MockMode = MockMode.AUTO
    cerebras_client: Literal["native", "sdk"] = "native"
    request_timeout_s: float = Field(default=constants.DEFAULT_REQUEST_TIMEOUT_S, gt=0)
    gateway_api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    ai_gateway_env: Environment = Environment.DEVELOPMENT
    max_request_bytes: int = Field(default=constants.DEFAULT_MAX_REQUEST_BYTES, gt=0)
    upstream_max_connections: int = Field(default=constants.DEFAULT_UPSTREAM_MAX_CONNECTIONS, gt=0)
    stream_send_timeout_s: float = Field(default=constants.DEFAULT_STREAM_SEND_TIMEOUT_S, gt=0)
    max_upstream_response_bytes: int = Field(
        default=constants.DEFAULT_MAX_UPSTREAM_RESPONSE_BYTES, gt=0
    )
    max_upstream_event_bytes: int = Field(default=constants.DEFAULT_MAX_UPSTREAM_EVENT_BYTES, gt=0)
    max_json_depth: int = Field(
        default=constants.DEFAULT_MAX_JSON_DEPTH, gt=0, le=constants.MAX_JSON_DEPTH_LIMIT
    )
    max_header_bytes: int = Field(default=constants.DEFAULT_MAX_HEADER_BYTES, gt=0)
    header_timeout_s: float = Field(default=constants.DEFAULT_HEADER_TIMEOUT_S, gt=0)
    models_cache_ttl_s: float = Field(default=constants.DEFAULT_MODELS_CACHE_TTL_S, ge=0)
    gateway_admin_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    database_url: str | None = None
    redis_url: SecretStr | None = None
    redis_prefix: str = Field(default="aigw", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    redis_timeout_s: float = Field(default=constants.DEFAULT_REDIS_TIMEOUT_S, gt=0)
    limits_fail_mode: FailMode = FailMode.OPEN
    key_cache_refresh_s: float = Field(default=constants.DEFAULT_KEY_CACHE_REFRESH_S, gt=0)
    key_negative_ttl_s: float = Field(default=constants.DEFAULT_KEY_NEGATIVE_TTL_S, ge=0)
    default_completion_tokens: int = Field(
        default=constants.DEFAULT_COMPLETION_TOKENS_ESTIMATE, gt=0
    )
    budget_soft_threshold: float = Field(
        default=constants.DEFAULT_BUDGET_SOFT_THRESHOLD, gt=0, le=1
    )
    """The share of a budget whose crossing is logged (and counted) once per period."""
    usage_journal_dir: Path = Path(constants.DEFAULT_USAGE_JOURNAL_DIR)
    usage_journal_fsync: bool = False
    usage_journal_max_bytes: int = Field(default=constants.DEFAULT_USAGE_JOURNAL_MAX_BYTES, ge=0)
    usage_ship_interval_s: float = Field(default=constants.DEFAULT_USAGE_SHIP_INTERVAL_S, gt=0)
    metrics_enabled: bool = True
    """Off: no request metrics are kept and /metrics is a 404 (for comparison runs)."""
    usage_ledger: bool = True
    """Off: nothing is journaled or shipped (costs are still priced for budgets)."""
    metrics_require_admin: bool = False
    """GET /metrics takes an admin key (GATEWAY_ADMIN_KEYS) instead of being public."""
    metrics_key_labels: bool = False
    """Request and cost metrics carry a `key_id` label (one series per key)."""
    otel_sdk_disabled: bool = False
    """OpenTelemetry's own switch: no tracing at all, whatever endpoint is set."""
    otel_exporter_otlp_endpoint: str | None = None
    """Traces are exported (OTLP over HTTP/protobuf) when this or the traces endpoint is set."""
    otel_exporter_otlp_traces_endpoint: str | None = None
    otel_service_name: str = constants.DEFAULT_OTEL_SERVICE_NAME
    otel_instrumentation_genai_capture_message_content: bool = False
    """Spans carry prompt and completion text."""
    ai_gateway_workers: int = Field(default=1, gt=0)
    """Set by `ai-gateway serve --workers N` for its worker processes."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    ci: bool = False
    ai_gateway_config: str | None = None

    @field_validator("gateway_api_keys", "gateway_admin_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """Accept `GATEWAY_API_KEYS` as a comma-separated string."""
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @field_validator(
        "cerebras_api_key", "cerebras_base_url", "database_url", "redis_url", mode="before"
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        """Treat an empty `CEREBRAS_API_KEY=`, `DATABASE_URL=` and the like as unset."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cerebras_base_url")
    @classmethod
    def _cerebras_url(cls, value: str | None) -> str | None:
        """The same check as every other base URL; a trailing `/v1` or `/` is allowed."""
        return None if value is None else check_base_url(value.strip(), name="CEREBRAS_BASE_URL")

    @field_validator("ci", mode="before")
    @classmethod
    def _ci_flag(cls, value: object) -> object:
        """Read `CI` the way CI systems set it: `true`/`1`/`yes` mean on, anything else off."""
        if isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "on"}
        return value

    @field_validator(
        "log_level", "log_format", "cerebras_client", "limits_fail_mode", mode="before"
    )
    @classmethod
    def _lower(cls, value: object) -> object:
        """Accept `INFO` as well as `info`."""
        return value.lower() if isinstance(value, str) else value

    @property
    def is_production(self) -> bool:
        """Whether the gateway runs in production."""
        return self.ai_gateway_env is Environment.PRODUCTION

    @property
    def is_cerebras_mock(self) -> bool:
        """Whether Cerebras is served by the deterministic mock instead of the real API."""
        if self.cerebras_mock is MockMode.AUTO:
            return self.ci or (self.cerebras_api_key is None and not self.is_production)
        return self.cerebras_mock is MockMode.TRUE

    @property
    def cerebras_sdk_base_url(self) -> str:
        """The base URL as the Cerebras SDK means it: the host root, without `/v1`."""
        if self.cerebras_base_url is None:
            return constants.CEREBRAS_DEFAULT_BASE_URL
        url = self.cerebras_base_url.rstrip("/")
        return url.removesuffix("/v1").rstrip("/")


def process_environment(env_file: str = ENV_FILE) -> dict[str, str]:
    """Every variable as Settings sees them: the `.env` file's, under the process's own.

    The config file's `api_key_env` names are read from here, so a key kept in `.env` works
    there as it does for `<NAME>_API_KEY`.
    """
    from_file = dotenv_values(env_file) if Path(env_file).is_file() else {}
    return {**{k: v for k, v in from_file.items() if v is not None}, **os.environ}


def variable_name(field: str) -> str:
    """The environment variable a Settings field is read from."""
    return field.upper()


def variable_names() -> tuple[str, ...]:
    """Every environment variable Settings reads."""
    return tuple(variable_name(field) for field in Settings.model_fields)


def describe_problem(error: ErrorDetails) -> str:
    """`VARIABLE must be ...`: what the variable accepts, never the value it was given."""
    variable = variable_name(str(error["loc"][0]))
    if error["type"] == "value_error":
        reason = str(error.get("ctx", {}).get("error", error["msg"]))
        return reason if reason.startswith(variable) else f"{variable}: {reason}"
    # pydantic's messages read "Input should be 'a' or 'b'" / "... greater than 0"; the
    # "unable to parse ..." tail of a parsing error adds nothing the variable's reader needs.
    reason = error["msg"].removeprefix("Input should be ").split(", unable to")[0]
    return f"{variable} must be {reason}" if reason != error["msg"] else f"{variable}: {reason}"


class InvalidSettings(ConfigurationError):
    """Variables that cannot configure a gateway: one problem per line, each naming its variable."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


def load_settings() -> Settings:
    """Settings from the environment and `.env`; InvalidSettings names every bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise InvalidSettings([describe_problem(error) for error in exc.errors()]) from None
