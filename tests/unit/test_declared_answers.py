"""Routes answer what their OpenAPI declares: in the test environment a JSON 2xx body that
does not validate against the declared model becomes a 500 (shared/http/answers.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from shared.http.answers import check_declared_answers
from shared.http.contracts import answers


class Thing(BaseModel):
    id: str
    count: int


def _app(answer: dict[str, Any]) -> tuple[FastAPI, int]:
    router = APIRouter()

    @router.get("/thing", responses=answers(Thing))
    async def thing() -> dict[str, Any]:
        return answer

    @router.get("/free")
    async def free() -> dict[str, Any]:  # declares nothing: left as it is
        return {"anything": True}

    checking = check_declared_answers([router])
    app = FastAPI()
    app.include_router(router)
    return app, checking


def test_an_answer_as_declared_passes_unchanged() -> None:
    app, wrapped = _app({"id": "a", "count": 2, "extra": None})
    assert wrapped == 1
    with TestClient(app) as client:
        r = client.get("/thing")
        assert (r.status_code, r.json()) == (200, {"id": "a", "count": 2, "extra": None})
        assert client.get("/free").json() == {"anything": True}


def test_an_answer_not_as_declared_is_a_500() -> None:
    app, _ = _app({"id": "a", "count": "many"})
    with TestClient(app) as client:
        r = client.get("/thing")
    assert r.status_code == 500
    assert r.headers["content-type"].startswith("application/problem+json")


def test_the_test_environment_checks_answers_and_dev_does_not() -> None:
    """Through `build_app`, as every service is built (no lifespan: nothing connects)."""
    from services.messaging.tables import api_keys
    from shared.http.app import build_app
    from shared.runtime import ServiceParts
    from shared.settings import Settings

    for env, status in (("test", 500), ("dev", 200)):
        router = APIRouter()

        @router.get("/thing", responses=answers(Thing))
        async def thing() -> dict[str, Any]:
            return {"id": "a"}  # no count

        app = build_app(ServiceParts(name="t", api_keys=api_keys), Settings(env=env),
                        title="t", description="t", routers=[router])
        assert TestClient(app).get("/thing").status_code == status
