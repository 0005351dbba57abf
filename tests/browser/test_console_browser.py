"""The console in a real browser: Debian's headless Chromium driven by Selenium.

`make test` runs scripts/install-browser first (apt's chromium + chromium-driver); nothing here
downloads a browser. The stack is served on this test's event loop, so every browser step
runs in a worker thread (`asyncio.to_thread`) while the loop keeps serving the pages.
A screenshot of each page goes to <pytest tmp>/console-screenshots/.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import pytest_asyncio

from shared.settings import Settings
from tests.support.console import ConsoleStack, console_stack

pytestmark = pytest.mark.integration
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER):
    pytest.skip("no chromium/chromedriver: run scripts/install-browser (make test does)",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

T = TypeVar("T")


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "console-screenshots"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--disable-extensions"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(settings: Settings, topics: list[str]) -> AsyncIterator[ConsoleStack]:
    async with console_stack(settings) as found:
        yield found


async def in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def wait(driver: WebDriver, check: Callable[[WebDriver], Any], timeout: float = 15) -> Any:
    # htmx swaps fragments under our feet: an element gone stale is looked up again.
    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=(StaleElementReferenceException,)).until(check)


async def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.2)
    return value


def sign_in(driver: WebDriver, url: str, key: str) -> None:
    driver.get(url + "/")
    driver.find_element(By.ID, "admin_key").send_keys(key)
    driver.find_element(By.ID, "signin").click()
    wait(driver, lambda d: d.current_url.endswith("/journeys"))


async def test_sign_in_journey_customer_template_in_a_browser(
    stack: ConsoleStack, browser: WebDriver, shots: Path, unique: str,
    admin_headers: dict[str, str], write_auth: tuple[str, str],
) -> None:
    urls, api = stack.urls, admin_headers
    key, user, tpl = f"web-{unique}", f"web-{unique}", f"web-{unique}"
    console = stack.console

    # A wrong key is refused with a clear message.
    def wrong_key() -> str:
        browser.get(console + "/")
        browser.find_element(By.ID, "admin_key").send_keys("tp_admin_wrong")
        browser.find_element(By.ID, "signin").click()
        text: str = wait(browser, lambda d: d.find_element(By.ID, "signin-error")).text
        browser.save_screenshot(str(shots / "signin-refused.png"))
        return text

    assert "refused" in await in_thread(wrong_key)
    await in_thread(lambda: sign_in(browser, console, api["Authorization"][7:]))

    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        await http.put(f"{urls['messaging']}/v1/templates/{tpl}", headers=api, json={
            "channel": "email", "subject": "Hello {{ profile.traits.first_name }}",
            "html": "<h1>Hi {{ profile.traits.first_name }}</h1><p>Thanks for joining.</p>"})
        document = {"key": key, "name": f"Web onboarding {unique}", "holdout_percent": 0,
                    "goal": {"event": f"Bought {unique}"}, "stages": [
            {"key": "joined", "enter": {"event": f"Joined {unique}"}, "steps": [
                {"id": "hello", "send": {"channel": "email", "template": tpl}},
                {"id": "pause", "wait": "P2D"},
                {"id": "check", "branch": {"cases": [{"when": {
                    "field": "profile.traits.plan", "op": "eq", "value": "pro"}, "next": "exit"}],
                    "default": "nudge"}},
                {"id": "nudge", "send": {"channel": "email", "template": tpl}},
                {"id": "exit", "exit": True}]},
            {"key": "engaged", "enter": {"event": f"Viewed {unique}"}},
            {"key": "bought", "enter": {"event": f"Bought {unique}"}}]}
        assert (await http.post(f"{urls['journey']}/v1/journeys", headers=api,
                                json=document)).status_code == 201
        await http.post(f"{urls['journey']}/v1/journeys/{key}/publish", headers=api)
        for n in range(3):
            await http.post(f"{urls['ingest']}/v1/identify", auth=write_auth, json={
                "userId": f"{user}-{n}", "traits": {"first_name": f"Ada{n}",
                                                    "email": f"{user}-{n}@example.com"}})
            await http.post(f"{urls['ingest']}/v1/track", auth=write_auth, json={
                "userId": f"{user}-{n}", "event": f"Joined {unique}"})

        async def stats_with(n: int) -> Any:
            s = (await http.get(f"{urls['journey']}/v1/journeys/{key}/stats",
                                headers=api)).json()
            return s if s["active_by_step"].get("joined", {}).get("pause") == n else None

        stats = await eventually(lambda: stats_with(3))

        def drawn_counts() -> dict[str, int]:
            # The counts drawn in the SVG flow (dagre layout), which must match the page's
            # list of steps (the accessible text) and the API.
            drawn = browser.execute_script(
                "return [...document.querySelectorAll('svg [data-step-node]')]"
                ".filter(e => e.dataset.active !== '')"
                ".map(e => [e.dataset.stepNode, e.querySelector('.badge-n').textContent]);")
            listed = browser.execute_script(
                "return [...document.querySelectorAll('[data-step]')]"
                ".map(e => [e.dataset.step, e.dataset.active]);")
            assert sorted(drawn) == sorted(listed), (drawn, listed)
            return {step: int(n) for step, n in drawn}

        def open_journey() -> dict[str, int]:
            browser.get(f"{console}/journeys")
            browser.save_screenshot(str(shots / "journeys.png"))
            browser.find_element(By.LINK_TEXT, f"Web onboarding {unique}").click()
            wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "svg [data-step-node]"))
            browser.save_screenshot(str(shots / "journey.png"))
            return drawn_counts()

        api_counts = {step: stats["active_by_step"]["joined"].get(step, 0)
                      for step in ("hello", "pause", "check", "nudge", "exit")}
        assert await in_thread(open_journey) == api_counts

        # A fourth customer enters: the drawn count follows within a refresh (every 5 s).
        await http.post(f"{urls['ingest']}/v1/track", auth=write_auth, json={
            "userId": f"{user}-9", "event": f"Joined {unique}"})
        await eventually(lambda: stats_with(4))
        assert await in_thread(lambda: wait(
            browser, lambda d: drawn_counts().get("pause") == 4, timeout=12))

        # One buys without `engaged`: the move skips a stage, drawn as an arc over it with
        # the API's count.
        await http.post(f"{urls['ingest']}/v1/track", auth=write_auth, json={
            "userId": f"{user}-9", "event": f"Bought {unique}"})

        async def skipped() -> Any:
            s = (await http.get(f"{urls['journey']}/v1/journeys/{key}/stats",
                                headers=api)).json()
            return [t["count"] for t in s["transitions"]
                    if (t["from"], t["to"]) == ("joined", "bought")]

        assert await eventually(skipped) == [1]

        def arc_count() -> str:
            arc = '.arc.above[data-from="joined"][data-to="bought"] .move'
            found: str = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, arc)
                              and d.find_element(By.CSS_SELECTOR, arc).text, timeout=12)
            browser.save_screenshot(str(shots / "journey-skip.png"))
            return found

        assert await in_thread(arc_count) == "1"

        found = (await http.get(f"{urls['profile']}/v1/profiles/lookup", headers=api,
                                params={"user_id": f"{user}-0"})).json()

    def read_trace() -> str:
        browser.get(f"{console}/customers?q={user}-0")
        browser.find_element(By.CSS_SELECTOR, f'a[href="/customers/{found["id"]}"]').click()
        why = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR,
                                                     f'ol.why[data-journey="{key}"]'))
        text: str = why.text
        # A message's rendered content opens in a sandboxed iframe.
        browser.find_element(By.CSS_SELECTOR, "#messages button").click()
        frame = wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#message-view iframe"))
        assert frame.get_attribute("sandbox") == ""
        assert "Hi Ada0" in (frame.get_attribute("srcdoc") or "")
        browser.save_screenshot(str(shots / "customer.png"))
        return text

    trace = await in_thread(read_trace)
    assert "because" in trace or "Stage" in trace or "Message" in trace, trace

    def edit_template() -> tuple[str, str]:
        browser.get(f"{console}/templates/{tpl}")
        browser.find_element(By.ID, "customer").send_keys(f"{user}-1@example.com")
        first = wait(browser, lambda d: "Ada1" in d.find_element(By.ID, "preview").text
                     and d.find_element(By.ID, "preview-subject").text)
        subject = browser.find_element(By.ID, "subject")
        subject.clear()
        subject.send_keys("Welcome aboard {{ profile.traits.first_name }}")
        second = wait(browser, lambda d: "aboard" in d.find_element(By.ID, "preview-subject")
                      .text and d.find_element(By.ID, "preview-subject").text)
        browser.save_screenshot(str(shots / "template.png"))
        return first, second

    first, second = await in_thread(edit_template)
    assert first == "Hello Ada1" and second == "Welcome aboard Ada1"

    def other_pages() -> dict[str, str]:
        out = {}
        for page in ("kpis", "broadcasts"):
            browser.get(f"{console}/{page}")
            browser.save_screenshot(str(shots / f"{page}.png"))
            out[page] = browser.find_element(By.TAG_NAME, "main").text
        return out

    def policy_errors() -> str:
        # The policy page from the nav; a wrong policy shows its error at the field's path
        # (not saved: nothing here changes what other tests send).
        browser.find_element(By.LINK_TEXT, "Policy").click()
        editor = wait(browser, lambda d: d.find_element(By.ID, "policy-document"))
        editor.clear()
        editor.send_keys("caps:\n  - {channel: email, max: 0, per: P7D}\n")
        browser.find_element(By.ID, "save-policy").click()
        text: str = wait(browser, lambda d: d.find_element(By.ID, "policy-errors")).text
        browser.save_screenshot(str(shots / "policy.png"))
        return text

    assert "caps.0.max" in await in_thread(policy_errors)

    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        has_broadcasts = (await http.get(f"{urls['journey']}/v1/broadcasts",
                                         headers=api)).status_code != 404
        if has_broadcasts:  # issue 16's public contract
            seg = f"web-{unique}"
            r = await http.put(f"{urls['profile']}/v1/segments/{seg}", headers=api, json={
                "name": "Web users", "rule": {"field": "profile.traits.first_name",
                                              "op": "exists"}})
            assert r.status_code == 200, r.text
            r = await http.put(f"{urls['journey']}/v1/broadcasts/{seg}", headers=api,
                               json={"name": f"Sale {unique}", "segment": seg,
                                     "template": tpl})
            assert r.status_code in (200, 201), r.text
    pages = await in_thread(other_pages)
    if has_broadcasts:
        def preview_audience() -> str:
            browser.get(f"{console}/broadcasts")
            row = browser.find_element(By.XPATH, f"//tr[contains(., 'Sale {unique}')]")
            row.find_element(By.CSS_SELECTOR, "button.preview-audience").click()
            found: str = wait(browser, lambda d: d.find_element(By.ID, "audience-recipients")
                              ).text
            browser.save_screenshot(str(shots / "broadcast-audience.png"))
            return found

        assert (await in_thread(preview_audience)).isdigit()
    else:
        assert "Not available on this stack" in pages["broadcasts"]
    # Nothing the pages do trips their Content-Security-Policy, and no script error (the
    # policy form's 400, its page with the errors, is the network log's only complaint).
    logs = await in_thread(lambda: browser.get_log("browser"))
    assert not [e for e in logs if "Content Security Policy" in e["message"]
                or e["level"] == "SEVERE" and "favicon" not in e["message"]
                and "401" not in e["message"]
                and not ("/policy - " in e["message"] and "status of 400" in e["message"])
                ], logs
    saved = await in_thread(lambda: {p.name for p in shots.iterdir()})
    assert saved >= {"journeys.png", "journey.png", "journey-skip.png", "customer.png",
                     "template.png", "policy.png"}
