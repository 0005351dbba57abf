"""May this message go out now? Consent and suppression, decided at send time."""

from __future__ import annotations

from collections.abc import Mapping

ERASED = "erased"  # the scope messaging records when profile erases a customer


def suppression_reason(*, channel: str, category: str, topic: str | None,
                       stored: Mapping[str, bool], snapshot: Mapping[str, bool],
                       undeliverable: bool) -> str | None:
    """None when the send may go ahead, else why not.

    `stored` is messaging's own durable copy (unsubscribes it received, consent changes from
    profile), `snapshot` the profile's consent carried in the command. An unsubscribe in
    either stops a marketing send: the most restrictive answer wins, so an unsubscribe that
    arrived after the command was emitted still counts. No decision recorded means allowed
    (opt-out). Transactional sends skip consent but never go to an undeliverable address
    or an erased profile.
    """
    if stored.get(ERASED) is False:
        return "suppressed: the profile was erased"
    if undeliverable:
        return f"suppressed: the {channel} address is marked undeliverable"
    if category == "transactional":
        return None
    scopes = [channel] + ([f"topic:{topic}"] if topic else [])
    for scope in scopes:
        for source in (stored, snapshot):
            if source.get(scope) is False:
                return f"suppressed: unsubscribed from {scope}"
    return None
