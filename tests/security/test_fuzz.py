"""Schemathesis over every service's OpenAPI, against the running stack, with all its
checks: no input, valid or not, gets a 5xx; every answer is declared, with its schema,
content type and headers; schema-valid input is accepted and schema-violating input
refused; auth is not ignored; methods not served say so. Deterministic and bounded:
derandomized, a few examples per operation and mode, so the abuse suite stays within
~2 minutes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from schemathesis.core.failures import FailureGroup

from tests.security.support import Stack

# schemathesis draws from `random` inside its strategies; hypothesis seeds it (derandomized
# here), so the runs stay repeatable: its deprecation notice is noise.
pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore:Do not use the `random` module")]
EXAMPLES = 12  # per operation and generation mode

# Operations whose valid input JSON schema cannot say whole (docs/reliability.md, Abuse
# suite): schema-valid data may get a 400 there, but only one naming these fields, for
# the reason given. Every other check runs on them as on the rest.
UNSAYABLE: dict[str, tuple[str, ...]] = {
    # Which provider serves which channel, and the settings it needs, follow the path.
    "PUT /v1/channels/{channel}/{provider}": ("provider", "settings", "credentials"),
    # At least one of four optional parameters; a phone number that exists.
    "GET /v1/profiles/lookup": ("query",),
    # A reporting segment that exists; at most one of four breakdown parameters.
    "GET /v1/kpis": ("segment", "channel", "journey", "broadcast", "template"),
    # A rule's durations are at most 100 years (ISO-8601 durations: no bound in JSON schema).
    "PUT /v1/segments/{key}": ("rule",),
    # Thresholds in order; windows are durations up to 90 days; a zone the tz database has.
    "PUT /v1/profile-settings/conventions": ("body", "attribution_open_window",
                                             "attribution_click_window", "timezone"),
    # Caps that can be reached; a positive expiry only for deferred sends; quiet hours
    # that start and end at different times.
    "PUT /v1/policy": ("caps", "on_hold", "quiet_hours"),
    # The template must exist; a positive expiry only for deferred sends; a rule's durations.
    "PUT /v1/broadcasts/{key}": ("template", "on_hold", "condition"),
    # The templates the steps send must exist; a rule's durations at most 100 years.
    "POST /v1/journeys": ("stages", "exit", "goal"),
    "POST /v1/journeys/validate": ("stages", "exit", "goal"),
    # A horizon is a duration of up to 3650 days.
    "POST /v1/journeys/{key}/simulate": ("body", "horizon"),
}
# A batch accepts its valid calls and lists each invalid one in `rejected` (Segment's
# semantics): a schema-violating call beside a valid one is answered 200.
PER_ITEM = {"POST /v1/batch", "POST /v1/import"}


def _names_only(response: Any, fields: tuple[str, ...]) -> bool:
    """Does every error of the 400 name one of `fields` (or a field below one)?"""
    try:
        named = [e["field"] for e in response.json().get("errors") or []]
    except ValueError:
        return False
    return bool(named) and all(any(n == f or n.startswith(f + ".") for f in fields)
                               for n in named)


def _fuzz(schema: Any, base_url: str, auth_for: Any) -> tuple[int, list[str]]:
    """Every operation, positive and negative data; returns (requests, failures)."""
    failures: list[str] = []
    sent = [0]
    session = requests.Session()

    def runner(strategy: Any, name: str, headers: dict[str, str], positive: bool) -> Any:
        @hypothesis_settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
                             database=None, phases=[Phase.explicit, Phase.generate],
                             suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case: Any) -> None:
            response = case.call(base_url=base_url, session=session, headers=headers,
                                 timeout=30)
            sent[0] += 1
            operation = f"{case.operation.method.upper()} {case.operation.path}"
            excluded = []
            if operation in UNSAYABLE:
                excluded.append(positive_data_acceptance)
                if positive and response.status_code == 400 and \
                        not _names_only(response, UNSAYABLE[operation]):
                    failures.append(f"{name} -> {response.status_code} "
                                    f"{response.text[:1000]}: refused for another reason")
            if operation in PER_ITEM:
                excluded.append(negative_data_rejection)
            try:
                case.validate_response(response, headers=headers, excluded_checks=excluded,
                                       transport_kwargs={"session": session,
                                                         "base_url": base_url})
            except FailureGroup as group:
                titles = "; ".join(sorted({f"{f.code} {f.title}" for f in group.exceptions}))
                failures.append(f"{name} -> {response.status_code} {response.text[:300]}: "
                                f"{titles}\n    {case.as_curl_command()}"[:2000])

        return run

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                strategy = operation.as_strategy(generation_mode=mode)
            except Exception:  # nothing negative to say about this operation
                continue
            name = f"{operation.method.upper()} {operation.path} ({mode.value})"
            try:
                runner(strategy, name, auth_for(operation.path),
                       mode is GenerationMode.POSITIVE)()
            except Unsatisfiable:  # e.g. no negative data for an operation without inputs
                continue
    return sent[0], failures


@pytest.mark.parametrize("service", ["ingest", "profile", "journey", "messaging"])
async def test_no_input_gets_a_server_error(stack: Stack, service: str) -> None:
    app = stack.apps[service]
    schema = schemathesis.openapi.from_dict(app.openapi())
    # OpenAPI cannot close a query string: an unknown parameter is ignored, as by any
    # server, and is no schema violation to expect a 4xx for.
    schema.config.generation.update(allow_extra_parameters=False)
    # A body over the size limit is refused with 413 (declared on every route with a body).
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    tenant = stack.a

    def auth_for(path: str) -> dict[str, str]:
        if service == "ingest" and not path.startswith("/v1/keys"):
            return {"Authorization": "Basic " + _basic(tenant.write_key)}
        return tenant.admin

    sent, failures = await asyncio.to_thread(_fuzz, schema, stack.urls[service], auth_for)
    assert sent > 0
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:400])


def _basic(user: str) -> str:
    import base64
    return base64.b64encode(f"{user}:".encode()).decode()



# Arbitrary JSON in every free-form field of a call: what ingest accepts must be storable
# downstream (test_z_logs checks the DLQ stays empty), what it refuses is a 4xx.
_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
            | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=12)
_objects = st.dictionaries(st.text(max_size=8), _json, max_size=4)
_calls = st.fixed_dictionaries(
    {"userId": st.text(min_size=1, max_size=30), "event": st.text(min_size=1, max_size=30)},
    optional={"properties": _objects, "context": _objects, "traits": _objects,
              "anonymousId": st.text(max_size=30), "messageId": st.text(max_size=40),
              "timestamp": st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat)
              | st.text(max_size=30)})


def _post_calls(url: str, write_key: str) -> tuple[dict[int, int], list[str]]:
    statuses: dict[int, int] = {}
    failures: list[str] = []
    session = requests.Session()
    session.auth = (write_key, "")

    @hypothesis_settings(max_examples=150, derandomize=True, deadline=None, database=None,
                         phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=list(HealthCheck))
    @given(call=_calls, path=st.sampled_from(["track", "identify", "page", "screen"]))
    def run(call: dict[str, Any], path: str) -> None:
        response = session.post(f"{url}/v1/{path}", json=call, timeout=30)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            failures.append(f"/v1/{path} -> {response.status_code}: {call!r}"[:500])

    run()
    return statuses, failures


async def test_fuzzed_tracking_calls_are_accepted_or_refused_never_a_500(stack: Stack) -> None:
    statuses, failures = await asyncio.to_thread(_post_calls, stack.urls["ingest"],
                                                 stack.a.write_key)
    assert not failures, "\n".join(failures[:10])
    assert statuses.get(200, 0) > 0 and sum(statuses.values()) >= 150, statuses
