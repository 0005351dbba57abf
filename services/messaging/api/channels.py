"""Channels: which provider delivers each channel of a workspace, with its credentials."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.messaging.api.deps import EngineDep, MessagingDep
from services.messaging.api.schemas import ChannelList, ChannelOut
from services.messaging.providers.registry import PROVIDERS, ProviderName
from services.messaging.secrets import hint
from services.messaging.store import channels as store
from shared.contracts.send import ChannelName
from shared.http.auth import AdminDep
from shared.http.contracts import answers
from shared.http.problems import Problem

router = APIRouter(prefix="/v1", tags=["channels"])


class ChannelIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"settings": {"host": "smtp.example.com", "port": 587, "from": "shop@example.com"},
        "credentials": {"username": "shop", "password": "secret"}}]})
    settings: dict[str, Any] = Field(default_factory=dict,
                                     description="provider settings (endpoints, sender, ...)")
    credentials: dict[str, Any] | None = Field(
        None, description="secrets, stored encrypted and never returned; omit on update to "
                          "keep the stored ones")
    rate_per_second: float | None = Field(None, gt=0, le=100_000,
                                          description="provider rate limit, per process")
    allow_private_targets: bool = Field(
        False, description="let this channel reach loopback/private addresses (on-premise "
                           "providers); refused (400) unless the operator set "
                           "TOUCHPOINT_MESSAGING_ALLOW_PRIVATE_TARGETS")


def _out(row: Any) -> dict[str, Any]:
    return {"channel": row["channel"], "provider": row["provider"], "settings": row["settings"],
            "credentials": row["secret_hints"], "rate_per_second": row["rate_per_second"],
            "allow_private_targets": row["allow_private_targets"],
            "updated_at": row["updated_at"]}


def _validate(model: type[BaseModel], values: dict[str, Any], field: str) -> BaseModel:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        errors = [{"field": ".".join([field, *(str(p) for p in e["loc"])]),
                   "message": e["msg"]} for e in exc.errors()]
        raise Problem(400, "Invalid channel configuration",
                      f"{errors[0]['field']}: {errors[0]['message']}", errors=errors) from exc


@router.put("/channels/{channel}/{provider}", responses=answers(ChannelOut))
async def put_channel(channel: ChannelName, provider: ProviderName, body: ChannelIn,
                      engine: EngineDep, m: MessagingDep, principal: AdminDep) -> dict[str, Any]:
    """Configure a provider for a channel (email: smtp; sms: twilio; push: webpush and/or
    fcm; webhook: webhook). Credentials are encrypted at rest and shown only as hints."""
    kind = PROVIDERS[provider]
    if kind.channel != channel:
        raise Problem(400, "Invalid channel configuration",
                      f"provider {provider} serves {kind.channel}, not {channel}",
                      errors=[{"field": "provider", "message": f"serves {kind.channel}"}])
    if body.allow_private_targets and not m.settings.messaging_allow_private_targets:
        raise Problem(400, "Invalid channel configuration",
                      "private targets are not allowed on this installation (the operator "
                      "sets TOUCHPOINT_MESSAGING_ALLOW_PRIVATE_TARGETS)",
                      errors=[{"field": "allow_private_targets",
                               "message": "not allowed on this installation"}])
    ws = principal.workspace_id
    credentials = body.credentials
    if credentials is None:
        async with engine.connect() as conn:
            stored = await store.sealed_secrets(conn, ws, channel, provider)
        try:
            credentials = m.box.open(stored) if stored is not None else {}
        except ValueError as exc:  # the secret key changed since they were stored
            raise Problem(400, "Invalid channel configuration", str(exc),
                          errors=[{"field": "credentials", "message": "send them again"}]) from exc
    settings = _validate(kind.settings, body.settings, "settings")
    secrets = _validate(kind.secrets, credentials, "credentials")
    try:  # constructors check combinations the models can't (e.g. sender or service sid)
        built = kind.build(settings, secrets, body.allow_private_targets, None)
    except ValueError as exc:
        raise Problem(400, "Invalid channel configuration", str(exc)) from exc
    await built.close()
    secret_values = secrets.model_dump(exclude_none=True)
    values = {"settings": settings.model_dump(mode="json"), "secrets": m.box.seal(secret_values),
              "secret_hints": {k: hint(v) for k, v in secret_values.items()},
              "rate_per_second": body.rate_per_second,
              "allow_private_targets": body.allow_private_targets}
    async with engine.begin() as conn:
        row = await store.save_channel(conn, ws, channel, provider, values)
    m.routes.forget(ws)
    return _out(row)


@router.get("/channels", responses=answers(ChannelList))
async def list_channels(engine: EngineDep, principal: AdminDep) -> dict[str, Any]:
    """Configured providers; without an email one, email goes to TOUCHPOINT_SMTP_URL."""
    async with engine.connect() as conn:
        rows = await store.channel_rows(conn, principal.workspace_id, ordered=True)
    return {"items": [_out(r) for r in rows]}


@router.get("/channels/{channel}/{provider}", responses=answers(ChannelOut, 404))
async def get_channel(channel: ChannelName, provider: ProviderName, engine: EngineDep,
                      principal: AdminDep) -> dict[str, Any]:
    """One provider configuration (credentials as hints only)."""
    async with engine.connect() as conn:
        row = await store.channel_row(conn, principal.workspace_id, channel, provider)
    if row is None:
        raise Problem(404, "Not found", f"no {provider} provider for {channel}")
    return _out(row)


@router.delete("/channels/{channel}/{provider}", status_code=204,
               responses=answers(None, 404))
async def delete_channel(channel: ChannelName, provider: ProviderName, engine: EngineDep,
                         m: MessagingDep, principal: AdminDep) -> None:
    """Remove a provider; sends over that channel fail until another is configured (email
    falls back to TOUCHPOINT_SMTP_URL)."""
    async with engine.begin() as conn:
        deleted = await store.delete_channel(conn, principal.workspace_id, channel, provider)
    if not deleted:
        raise Problem(404, "Not found", f"no {provider} provider for {channel}")
    m.routes.forget(principal.workspace_id)
