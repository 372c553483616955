"""CerebrasProvider: Cerebras through the OpenAI mapping (its SDK, the native wire or the mock)."""

import time
from collections.abc import Callable

from ai_gateway.config import constants
from ai_gateway.providers.openai_compat import OpenAICompatProvider
from ai_gateway.providers.params import ParamPolicy
from ai_gateway.providers.protocol import UpstreamAPI


class CerebrasProvider(OpenAICompatProvider):
    """Serves chat completions and the model list from Cerebras."""

    def __init__(
        self,
        client: UpstreamAPI,
        *,
        params: ParamPolicy | None = None,
        models_ttl_s: float = constants.DEFAULT_MODELS_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            constants.CEREBRAS, client, params=params, models_ttl_s=models_ttl_s, clock=clock
        )
