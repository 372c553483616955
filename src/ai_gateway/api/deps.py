"""The app's collaborators, for plain routes (`*_of`) and as Annotated dependency aliases.

Every dependency is `async def`: FastAPI runs plain `def` dependencies in a thread pool, which
cost about 2 ms per request in the benchmark.
"""

from typing import Annotated

from fastapi import Depends, Request

from ai_gateway.api.auth import auth_bearer
from ai_gateway.config.settings import Settings
from ai_gateway.routing.router import Router


def settings_of(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def router_of(request: Request) -> Router:
    """The app's router: aliases, routes, breakers."""
    router: Router = request.app.state.router
    return router


async def get_router(request: Request) -> Router:
    """The router, as a dependency."""
    return router_of(request)


RouterDep = Annotated[Router, Depends(get_router)]
CallerDep = Annotated[None, Depends(auth_bearer)]
