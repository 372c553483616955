"""Annotated dependency aliases for the routes."""

from typing import Annotated

from fastapi import Depends, Request

from ai_gateway.api.auth import auth_bearer
from ai_gateway.api.record import RequestRecord, record_of_request
from ai_gateway.config.config import Settings
from ai_gateway.providers.registry import Registry


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_registry(request: Request) -> Registry:
    """The app's provider registry."""
    registry: Registry = request.app.state.registry
    return registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
RecordDep = Annotated[RequestRecord, Depends(record_of_request)]
CallerDep = Annotated[None, Depends(auth_bearer)]
