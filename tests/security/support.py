"""What the abuse suite's tests share: the running stack, its tenants, the captured logs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI

from shared.logging import JsonFormatter
from shared.settings import Settings


@dataclass(frozen=True)
class Tenant:
    workspace: str
    admin_key: str
    write_key: str
    email: str
    phone: str

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    @property
    def write(self) -> tuple[str, str]:
        return (self.write_key, "")


class CapturedLogs(logging.Handler):
    """Every record, as the production JSON formatter writes it."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter("security-suite"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class Stack:
    settings: Settings
    apps: dict[str, FastAPI]
    urls: dict[str, str]
    a: Tenant
    b: Tenant
    http: httpx.AsyncClient
    logs: CapturedLogs
    secrets: list[str] = field(default_factory=list)

    def url(self, service: str, path: str) -> str:
        return self.urls[service] + path
