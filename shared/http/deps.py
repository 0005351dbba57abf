"""What routes take from the app, as `Annotated` dependency aliases (with `AdminDep`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.runtime import ServiceRuntime


def _runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.runtime.engine
    return engine


RuntimeDep = Annotated[ServiceRuntime, Depends(_runtime)]
EngineDep = Annotated[AsyncEngine, Depends(_engine)]
