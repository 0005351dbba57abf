"""Which identifiers an event carries, normalised (pure)."""

from __future__ import annotations

from shared.contracts.events import Event, EventType


def normalise_email(value: object) -> str | None:
    if not isinstance(value, str) or "@" not in value:
        return None
    email = value.strip().lower()
    return email if 3 <= len(email) <= 320 else None


def identifiers(event: Event) -> list[tuple[str, str]]:
    """(kind, value) pairs, strongest first: user_id, email, anonymous_id, alias's previous id."""
    out: list[tuple[str, str]] = []
    if event.user_id:
        out.append(("user_id", event.user_id))
    traits = event.traits or event.context.get("traits") or {}
    if isinstance(traits, dict) and (email := normalise_email(traits.get("email"))):
        out.append(("email", email))
    if event.anonymous_id:
        out.append(("anonymous_id", event.anonymous_id))
    if event.type is EventType.alias and event.previous_id:
        # The previous id may have been a user id or an anonymous id.
        out += [("user_id", event.previous_id), ("anonymous_id", event.previous_id)]
    return out


def trait_updates(event: Event) -> dict[str, object]:
    """Traits an event sets on the profile: identify's traits (and group traits are not ours)."""
    if event.type is EventType.identify:
        return dict(event.traits)
    return {}
