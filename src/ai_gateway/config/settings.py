"""Settings: every environment variable the gateway reads, typed, with defaults."""

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from dotenv import dotenv_values
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ai_gateway.config import constants

ENV_FILE = ".env"

VENDOR_NAMES = (
    "openai",
    "groq",
    "together",
    "fireworks",
    "deepinfra",
    "openrouter",
    "mistral",
    "xai",
    "deepseek",
    "gemini",
    "anthropic",
    "ollama",
    "vllm",
    "lmstudio",
)


class Environment(StrEnum):
    """Where the gateway runs; production refuses unsafe defaults."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class MockMode(StrEnum):
    """How the Cerebras provider chooses between the real API and the deterministic mock."""

    AUTO = "auto"
    TRUE = "true"
    FALSE = "false"


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
    models_cache_ttl_s: float = Field(default=constants.DEFAULT_MODELS_CACHE_TTL_S, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    ci: bool = False
    ai_gateway_config: str | None = None
    # OpenAI-compatible vendors (providers/specs.py): a key turns a hosted vendor on, a base URL
    # turns a local server on (and overrides a hosted vendor's URL).
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    groq_api_key: SecretStr | None = None
    groq_base_url: str | None = None
    together_api_key: SecretStr | None = None
    together_base_url: str | None = None
    fireworks_api_key: SecretStr | None = None
    fireworks_base_url: str | None = None
    deepinfra_api_key: SecretStr | None = None
    deepinfra_base_url: str | None = None
    openrouter_api_key: SecretStr | None = None
    openrouter_base_url: str | None = None
    mistral_api_key: SecretStr | None = None
    mistral_base_url: str | None = None
    xai_api_key: SecretStr | None = None
    xai_base_url: str | None = None
    deepseek_api_key: SecretStr | None = None
    deepseek_base_url: str | None = None
    gemini_api_key: SecretStr | None = None
    gemini_base_url: str | None = None
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    ollama_api_key: SecretStr | None = None
    ollama_base_url: str | None = None
    vllm_api_key: SecretStr | None = None
    vllm_base_url: str | None = None
    lmstudio_api_key: SecretStr | None = None
    lmstudio_base_url: str | None = None

    @field_validator("gateway_api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        """Accept `GATEWAY_API_KEYS` as a comma-separated string."""
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @field_validator("cerebras_api_key", *(f"{n}_api_key" for n in VENDOR_NAMES), mode="before")
    @classmethod
    def _blank_key_is_none(cls, value: object) -> object:
        """Treat an empty `CEREBRAS_API_KEY=` as unset."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("ci", mode="before")
    @classmethod
    def _ci_flag(cls, value: object) -> object:
        """Read `CI` the way CI systems set it: `true`/`1`/`yes` mean on, anything else off."""
        if isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "on"}
        return value

    @field_validator("log_level", "log_format", "cerebras_client", mode="before")
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
        if self.cerebras_base_url is None or not self.cerebras_base_url.strip():
            return constants.CEREBRAS_DEFAULT_BASE_URL
        url = self.cerebras_base_url.strip().rstrip("/")
        return url.removesuffix("/v1").rstrip("/")


def process_environment(env_file: str = ENV_FILE) -> dict[str, str]:
    """Every variable as Settings sees them: the `.env` file's, under the process's own.

    The config file's `api_key_env` names are read from here, so a key kept in `.env` works
    there as it does for `<NAME>_API_KEY`.
    """
    from_file = dotenv_values(env_file) if Path(env_file).is_file() else {}
    return {**{k: v for k, v in from_file.items() if v is not None}, **os.environ}
