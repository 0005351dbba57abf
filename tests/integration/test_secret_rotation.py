"""After a rotation, links mailed under the earlier secret still open; links forged with the
public development secret never do (the messaging app over HTTP)."""

from __future__ import annotations

import httpx
import pytest

from services.messaging.app import create_app
from services.messaging.domain.tokens import sign_token
from services.messaging.secrets import SecretBox
from shared.settings import DEV_SECRET, Settings

pytestmark = pytest.mark.integration

OLD, NEW = "o" * 43, "n" * 43


def _unsubscribe_token(secret: str) -> str:
    return sign_token(SecretBox(secret).token_key,
                      {"k": "u", "w": "default", "p": "p1", "m": "m1", "c": "email"})


async def test_links_of_the_earlier_secret_keep_working(settings: Settings) -> None:
    rotated = settings.model_copy(update={"secret": NEW, "secret_previous": OLD})
    app = create_app(rotated)  # the routes used here need no lifespan (no DB, no broker)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://messaging") as http:
        for secret, status in ((OLD, 200), (NEW, 200), (DEV_SECRET, 404), ("x" * 43, 404)):
            r = await http.get(f"/u/{_unsubscribe_token(secret)}")
            assert r.status_code == status, (secret[:3], r.text)
        # New links are signed with the current secret only.
        token = app.state.messaging.links._token("u", "default", "p1", "m1", "email")
        assert token == _unsubscribe_token(NEW)
    dropped = create_app(settings.model_copy(update={"secret": NEW, "secret_previous": ""}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dropped),
                                 base_url="http://messaging") as http:
        assert (await http.get(f"/u/{_unsubscribe_token(OLD)}")).status_code == 404
