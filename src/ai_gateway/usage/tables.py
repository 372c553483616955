"""The ledger table: one row per accounted request (on the same MetaData as the keys)."""

from sqlalchemy import Boolean, Column, Float, Index, Integer, String, Table

from ai_gateway.keys.tables import ID_LENGTH, NAME_LENGTH, UtcDateTime, metadata

ENTRY_ID_LENGTH = 40
REQUEST_ID_LENGTH = 128
STATUS_LENGTH = 16
CODE_LENGTH = 64
MODEL_LENGTH = 256

ledger = Table(
    "usage_ledger",
    metadata,
    # The gateway's own id for the entry: unique per request even when callers reuse an
    # x-request-id, and the key that makes shipping idempotent.
    Column("entry_id", String(ENTRY_ID_LENGTH), primary_key=True),
    Column("request_id", String(REQUEST_ID_LENGTH), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("key_id", String(ID_LENGTH), nullable=True),
    Column("team", String(NAME_LENGTH), nullable=True),
    Column("route", String(MODEL_LENGTH), nullable=True),
    Column("provider", String(NAME_LENGTH), nullable=True),
    Column("model", String(MODEL_LENGTH), nullable=True),
    # The HTTP status the caller got ("200", "429", ...), `rejected` (refused by a limit or a
    # budget before any upstream call) or `interrupted` (cut short by a crash).
    Column("status", String(STATUS_LENGTH), nullable=False),
    Column("http_status", Integer, nullable=True),
    Column("error_code", String(CODE_LENGTH), nullable=True),
    Column("is_stream", Boolean, nullable=False),
    Column("attempts", Integer, nullable=True),
    Column("prompt_tokens", Integer, nullable=True),
    Column("completion_tokens", Integer, nullable=True),
    Column("cached_tokens", Integer, nullable=True),
    Column("reasoning_tokens", Integer, nullable=True),
    Column("cost_usd", Float, nullable=True),  # NULL when the price is unknown, never 0
    Column("reserved_tokens", Integer, nullable=True),
    Column("reserved_cost_usd", Float, nullable=True),
    Column("latency_ms", Float, nullable=True),
    Column("ttft_ms", Float, nullable=True),
    Index("ix_usage_ledger_created_at", "created_at"),
    Index("ix_usage_ledger_key_id_created_at", "key_id", "created_at"),
    Index("ix_usage_ledger_team_created_at", "team", "created_at"),
)
