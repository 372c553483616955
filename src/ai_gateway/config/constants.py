"""Route prefixes, header names and default values shared across the gateway."""

from typing import Final

CEREBRAS: Final = "cerebras"
CEREBRAS_DEFAULT_BASE_URL: Final = "https://api.cerebras.ai"

CHAT_COMPLETIONS_PATH: Final = "/v1/chat/completions"
MODELS_PATH: Final = "/v1/models"
HEALTH_PATH: Final = "/healthz"
READY_PATH: Final = "/readyz"
OPENAPI_PATH: Final = "/openapi.json"
DEPLOYMENTS_HEALTH_PATH: Final = "/v1/deployments/health"
METRICS_PATH: Final = "/metrics"

REQUEST_ID_HEADER: Final = "x-request-id"
SERVER_TIMING_HEADER: Final = "server-timing"
MOCK_HEADER: Final = "x-ai-gateway-mock"
DEPLOYMENT_HEADER: Final = "x-ai-gateway-deployment"
SHOULD_RETRY_HEADER: Final = "x-should-retry"
RETRY_AFTER_HEADERS: Final = ("retry-after", "retry-after-ms")

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8000
DEFAULT_REQUEST_TIMEOUT_S: Final = 60.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
DEFAULT_MAX_REQUEST_BYTES: Final = 4 * 1024 * 1024
DEFAULT_MODELS_CACHE_TTL_S: Final = 300.0
UPSTREAM_MAX_KEEPALIVE: Final = 128
DEFAULT_UPSTREAM_MAX_CONNECTIONS: Final = 1024
DEFAULT_STREAM_SEND_TIMEOUT_S: Final = 30.0
DEFAULT_MAX_UPSTREAM_RESPONSE_BYTES: Final = 16 * 1024 * 1024
DEFAULT_MAX_UPSTREAM_EVENT_BYTES: Final = 1024 * 1024
DEFAULT_MAX_JSON_DEPTH: Final = 64
# Far below the JSON parser's own recursion limit, so the gateway's check always comes first.
MAX_JSON_DEPTH_LIMIT: Final = 256
DEFAULT_MAX_HEADER_BYTES: Final = 64 * 1024
DEFAULT_HEADER_TIMEOUT_S: Final = 5.0

DEFAULT_DATABASE_FILE: Final = "ai-gateway.db"
DEFAULT_REDIS_TIMEOUT_S: Final = 0.5
DEFAULT_KEY_CACHE_REFRESH_S: Final = 10.0
DEFAULT_KEY_NEGATIVE_TTL_S: Final = 5.0
DEFAULT_COMPLETION_TOKENS_ESTIMATE: Final = 1024
DEFAULT_BUDGET_SOFT_THRESHOLD: Final = 0.8
ADMIN_PREFIX: Final = "/admin/v1/"
DEFAULT_USAGE_JOURNAL_DIR: Final = "ai-gateway-journal"
DEFAULT_USAGE_JOURNAL_MAX_BYTES: Final = 1024 * 1024 * 1024
USAGE_JOURNAL_SEGMENT_BYTES: Final = 4 * 1024 * 1024
DEFAULT_USAGE_SHIP_INTERVAL_S: Final = 0.5

DEFAULT_OTEL_SERVICE_NAME: Final = "ai-gateway"
# Route, deployment and model names a metric label takes beyond the config's, once they succeed.
METRICS_MAX_LEARNED_NAMES: Final = 100

DEV_KEY_PREFIX: Final = "sk-gw-dev-"
MAX_REQUEST_ID_LENGTH: Final = 128
