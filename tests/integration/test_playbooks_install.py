"""`touchpoint playbooks install` against the real journey and messaging services.

The services run with a workspace of their own (bootstrap keys seeded for it), so published
playbooks never meet another test's customers.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from services.journey.app import create_app as journey_app
from services.messaging.app import create_app as messaging_app
from shared.auth import new_key
from shared.settings import Settings
from shared.testing.ready import wait_ready
from shared.testing.servers import serve_app
from touchpoint import playbooks
from touchpoint.cli import app as cli
from touchpoint.playbooks import NAMES, load

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(settings: Settings, topics: list[str], unique: str
                ) -> AsyncIterator[dict[str, str]]:
    """Journey and messaging for a fresh workspace: the CLI's environment."""
    admin = new_key("admin")
    mine = settings.model_copy(update={"default_workspace": f"pb-{unique}",
                                       "bootstrap_admin_key": admin,
                                       "bootstrap_write_key": new_key("write")})
    async with AsyncExitStack() as stack, httpx.AsyncClient(timeout=10) as http:
        env = {"TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": admin}
        for name, factory in (("journey", journey_app), ("messaging", messaging_app)):
            url = await stack.enter_async_context(serve_app(factory(mine)))
            await wait_ready(http, url, timeout=30)
            env[f"TOUCHPOINT_{name.upper()}_URL"] = url
        yield env


async def touchpoint(env: dict[str, str], *args: str, answer: str = "") -> tuple[int, str]:
    """The real command, in a thread (its HTTP client blocks; the services run here)."""
    result = await asyncio.to_thread(CliRunner().invoke, cli, list(args), input=answer,
                                     env=env)
    return result.exit_code, result.output


async def get(env: dict[str, str], service: str, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(env[f"TOUCHPOINT_{service.upper()}_URL"] + path, headers={
            "Authorization": f"Bearer {env['TOUCHPOINT_BOOTSTRAP_ADMIN_KEY']}"})


async def test_install_all_shows_the_diff_asks_and_is_idempotent(stack: dict[str, str]) -> None:
    code, out = await touchpoint(stack, "playbooks", "install", "--all", answer="n\n")
    assert code == 1 and "Apply? [y/N]" in out and "nothing applied" in out
    assert "journey welcome (new)" in out and "template review-request-thanks (new)" in out
    assert (await get(stack, "journey", "/v1/journeys/welcome")).status_code == 404

    code, out = await touchpoint(stack, "playbooks", "install", "--all", answer="y\n")
    assert code == 0, out
    assert "journey birthday: draft saved" in out
    assert "code pool review-thanks: created with 5000 codes" in out
    pool = (await get(stack, "messaging", "/v1/code-pools/review-thanks")).json()
    assert pool["remaining"] == 5000
    for name in NAMES:
        summary = (await get(stack, "journey", f"/v1/journeys/{name}")).json()
        assert summary["status"] == "draft" and summary["draft"]["key"] == name
        for key, body in load(name).templates.items():
            saved = (await get(stack, "messaging", f"/v1/templates/{key}")).json()
            assert saved["subject"] == body["subject"] and saved["html"] == body["html"]

    code, out = await touchpoint(stack, "playbooks", "install", "--all")
    assert code == 0 and "nothing to do" in out, out

    # Publishing is a change; knobs are a diff of the document; then stable again.
    code, out = await touchpoint(stack, "playbooks", "install", "abandoned-cart", "--publish",
                                 "--knob", "grace=PT30M", "--yes")
    assert code == 0 and "published as version 1" in out, out
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert '- "wait": "PT1H"' in lines and '+ "wait": "PT30M"' in lines
    version = (await get(stack, "journey", "/v1/journeys/abandoned-cart/versions/1")).json()
    assert version["document"]["stages"][0]["steps"][0]["wait"] == "PT30M"
    code, out = await touchpoint(stack, "playbooks", "install", "abandoned-cart", "--publish",
                                 "--knob", "grace=PT30M", "--yes")
    assert "nothing to do" in out, out
    code, out = await touchpoint(stack, "playbooks", "install", "abandoned-cart", "--demo",
                                 "--yes")
    assert code == 0 and "journey abandoned-cart (changed)" in out, out
    summary = (await get(stack, "journey", "/v1/journeys/abandoned-cart")).json()
    assert summary["published_version"] == 1 and summary["status"] == "published"
    assert "quiet_hours" not in summary["draft"]  # a demo draft beside the live version


async def test_broken_playbooks_are_refused_with_line_and_column(
        stack: dict[str, str], tmp_path: Path) -> None:
    folder = tmp_path / "welcome"
    shutil.copytree(Path(playbooks.__file__).parent / "welcome", folder)
    template = folder / "templates/welcome-2.json"
    body = json.loads(template.read_text())
    body["html"] = "<p>Hi</p>\n<p>{% if profile.traits.vip %}VIP</p>"
    template.write_text(json.dumps(body))
    code, out = await touchpoint(stack, "playbooks", "install", str(folder), "--yes")
    assert code == 1 and "template welcome-2 html: line 2, column" in out, out
    assert "expected tag endif" in out
    assert (await get(stack, "messaging", "/v1/templates/welcome-1")).status_code == 404

    body["html"] = "<p>fine</p>"
    template.write_text(json.dumps(body))
    (folder / "journey.json").write_text('{"key": "welcome",\n  "name": }')
    code, out = await touchpoint(stack, "playbooks", "install", str(folder), "--yes")
    assert code == 1 and "line 2, column 11" in out, out

    document = load("welcome").journey | {"reentry": "sometimes"}
    (folder / "journey.json").write_text(json.dumps(document))
    code, out = await touchpoint(stack, "playbooks", "install", str(folder), "--yes")
    assert code == 1 and "journey reentry:" in out, out

    # What only the service knows still comes back, field by field: an email needs a subject.
    (folder / "journey.json").write_text(json.dumps(load("welcome").journey))
    template.write_text(json.dumps({"channel": "email", "text": "no subject"}))
    code, out = await touchpoint(stack, "playbooks", "install", str(folder), "--yes")
    assert code == 1 and "template welcome-2 refused: 400" in out and "subject" in out, out
