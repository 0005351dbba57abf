"""Which identifiers an event carries, normalised, and which profile they resolve to (pure)."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field

import phonenumbers

from shared.contracts.events import Event, EventType

Identifier = tuple[str, str]  # (kind, value): user_id, email, phone, anonymous_id, profile_id
MAX_VALUE = 320
_NAMESPACE = uuid.UUID("7f1c2b52-6c1e-4a43-9e55-2b9c7f0d2a11")
_NAMESPACE_BYTES = _NAMESPACE.bytes


def normalise_email(value: object) -> str | None:
    if not isinstance(value, str) or "@" not in value:
        return None
    email = value.strip().lower()
    return email if 3 <= len(email) <= 320 else None


def normalise_phone(value: object, default_region: str | None = None) -> str | None:
    """E.164 (`+4915123456789`), or None when it is not a valid number.

    Without a leading `+` the number is read in `default_region` (a workspace setting).
    """
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    try:
        parsed = phonenumbers.parse(str(value), default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def event_traits(event: Event) -> dict[str, object]:
    """identify's traits; other calls may carry them in `context.traits` (Segment spec)."""
    traits = event.traits or event.context.get("traits") or {}
    return traits if isinstance(traits, dict) else {}


def identifiers(event: Event, phone_region: str | None = None) -> list[Identifier]:
    """(kind, value) pairs, strongest first: user_id, email, phone, anonymous_id, alias's id."""
    out: list[Identifier] = []
    if event.user_id:
        out.append(("user_id", event.user_id))
    traits = event_traits(event)
    if email := normalise_email(traits.get("email")):
        out.append(("email", email))
    if phone := normalise_phone(traits.get("phone"), phone_region):
        out.append(("phone", phone))
    if event.anonymous_id:
        out.append(("anonymous_id", event.anonymous_id))
    if event.type is EventType.alias and event.previous_id:
        # alias's previous id may have been a user id or an anonymous id, or one not seen yet:
        # it is kept as kind `alias`, which user-id and anonymous-id lookups also try.
        out.append(("alias", event.previous_id))
    # Identity values are stored up to 320 characters: look up exactly what is stored.
    return list(dict.fromkeys((kind, value[:MAX_VALUE]) for kind, value in out))


def lookup_only(event: Event) -> list[Identifier]:
    """Identifiers that find a profile but are never claimed by this event."""
    out: list[Identifier] = []
    if event.type is EventType.alias and event.previous_id:
        out += [("user_id", event.previous_id), ("anonymous_id", event.previous_id)]
    for value in (event.user_id, event.anonymous_id):
        if value:
            out.append(("alias", value))
    return list(dict.fromkeys((kind, value[:MAX_VALUE]) for kind, value in out))


def trait_updates(event: Event) -> dict[str, object]:
    """Traits an event sets on the profile: identify's traits (group traits are not ours)."""
    if event.type is EventType.identify:
        return dict(event.traits)
    return {}


def new_profile_id(workspace_id: str, first: Identifier) -> str:
    """Derived from the identifier that created the profile, so a replay creates the same id."""
    # uuid.uuid5's steps (SHA-1 of namespace + name, version 5, RFC 4122 variant) without
    # building a UUID object: that object cost half of resolution's time. A unit test checks
    # the ids are uuid5's.
    name = f"{workspace_id}\x00{first[0]}\x00{first[1]}".encode()
    raw = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def identifier_hash(workspace_id: str, ident: Identifier) -> str:
    """What an erasure tombstone keeps instead of the identifier itself."""
    return hashlib.sha256(f"{workspace_id}\x00{ident[0]}\x00{ident[1]}".encode()).hexdigest()


@dataclass(frozen=True)
class Candidate:
    """What resolution needs to know about an existing profile."""

    id: str
    user_id: str | None
    first_seen_key: str  # ISO timestamp: earliest activity, so the order of arrival doesn't matter


@dataclass
class Resolution:
    profile_id: str
    created: bool = False
    merged: list[str] = field(default_factory=list)  # profiles folded into profile_id
    claimed: list[Identifier] = field(default_factory=list)  # identifiers newly pointing at it


def resolve(workspace_id: str, ids: list[Identifier], owners: dict[Identifier, str],
            profiles: dict[str, Candidate], *, lookup: list[Identifier] | None = None,
            explicit: bool = False) -> Resolution:
    """Pick the profile for these identifiers; which others merge into it; which ids it claims.

    Rules (documented in docs/profile.md):
    - profiles found through the identifiers merge, except two profiles holding different
      user ids (a shared family email must not fuse two accounts); `explicit` (alias) overrides;
    - the survivor is the profile with a user id, else the earliest seen, then the smallest id;
    - identifiers owned by a profile that does not merge stay with it.
    """
    everything = ids + (lookup or [])
    found = list(dict.fromkeys(owners[i] for i in everything if i in owners))
    claimed = [i for i in ids if i not in owners]
    # A user id carried by the event, or held by the first profile found, fixes who this is.
    user_ids = {v for k, v in ids if k == "user_id"}
    holders = {owners[i] for i in ids if i[0] == "user_id" and i in owners}
    group: list[str] = []
    for pid in found:
        uid = profiles[pid].user_id
        conflict = uid and user_ids and uid not in user_ids and pid not in holders
        if conflict and not explicit:
            continue
        group.append(pid)
        if uid:
            user_ids.add(uid)
    if not group:
        return Resolution(new_profile_id(workspace_id, ids[0]), created=True, claimed=claimed)
    survivor = min(group, key=lambda p: (profiles[p].user_id is None,
                                         profiles[p].first_seen_key, p))
    merged = sorted(p for p in group if p != survivor)
    return Resolution(survivor, merged=merged, claimed=claimed)
