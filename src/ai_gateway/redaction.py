"""Redactor: upstream keys out of any upstream text the gateway returns or logs."""

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
# Shorter values are placeholders ("none", "ollama") that local servers accept, not secrets;
# replacing them would mangle ordinary words in messages.
MIN_KEY_LENGTH = 8
KEY_SHAPES = re.compile(
    # Any bearer token; the digit it must hold keeps "Bearer authentication" readable.
    r"(?i)\bbearer\s+(?=[A-Za-z._~+/=\-]*\d)[A-Za-z0-9._~+/=\-]{8,}"
    # OpenAI sk-, sk-proj-; Anthropic sk-ant-; OpenRouter sk-or-v1-; DeepSeek sk-; Cerebras csk-
    r"|\b(?:bearer\s+)?(?:c?sk|key|api[_-]?key)[-_][A-Za-z0-9_\-]{8,}"
    # Groq gsk_, Fireworks fw_; xAI keys have no dash after the prefix, its model names do
    r"|\b(?:gsk|fw)_[A-Za-z0-9]{8,}"
    r"|\bxai-[A-Za-z0-9]{8,}"
    # Google API keys: AIza and 35 more characters
    r"|\bAIza[A-Za-z0-9_\-]{30,}"
)


class Redactor:
    """Replaces the configured upstream keys, and anything shaped like a key, by `[redacted]`."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        # Longest first, so a key that contains another is removed whole.
        unique = {key for key in keys if len(key) >= MIN_KEY_LENGTH}
        self._keys = tuple(sorted(unique, key=len, reverse=True))

    def __repr__(self) -> str:
        return f"Redactor(keys={len(self._keys)})"

    def including(self, *keys: str) -> "Redactor":
        """This redactor, also removing `keys` (itself when it knows them already)."""
        extra = [key for key in keys if len(key) >= MIN_KEY_LENGTH and key not in self._keys]
        return Redactor((*self._keys, *extra)) if extra else self

    def redact(self, text: str) -> str:
        """`text` without any configured key or key-shaped token."""
        for key in self._keys:
            if key in text:
                text = text.replace(key, REDACTED)
        return KEY_SHAPES.sub(REDACTED, text)
