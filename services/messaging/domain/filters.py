"""Touchpoint's own Liquid filters: `json`, `money`, `date` (in the customer's zone),
`url_encode` and `code` (discount codes). Pure: what a filter needs from outside the
template (currency, zone, the codes handed out) comes in `RenderOptions` for one render."""

from __future__ import annotations

import json as json_lib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote_plus
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from liquid import Undefined
from liquid.exceptions import LiquidError

# Symbol placed before the amount; other currencies are written `12.50 CHF`.
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹", "BRL": "R$",
            "AUD": "A$", "CAD": "C$"}
_NO_CENTS = {"JPY", "KRW", "CLP", "ISK", "VND"}
CODE_PLACEHOLDER = "[{} code]"  # what `code` writes in a preview (no code handed out)


class FilterError(LiquidError):
    """A filter was given a value it can't use."""

    def __init__(self, message: str) -> None:
        super().__init__(message, token=None)


@dataclass
class RenderOptions:
    """One render's outside inputs. `codes` is None while discovering which pools a
    template asks for (`code` then records the pool in `pools` and writes a placeholder)."""

    currency: str = "USD"
    timezone: str = "UTC"
    codes: dict[str, str] | None = None
    pools: list[str] = field(default_factory=list)


_options: ContextVar[RenderOptions | None] = ContextVar("render_options", default=None)


@contextmanager
def render_options(options: RenderOptions) -> Iterator[RenderOptions]:
    token = _options.set(options)
    try:
        yield options
    finally:
        _options.reset(token)


def _current() -> RenderOptions:
    return _options.get() or RenderOptions()


def _plain(value: object) -> Any:
    if isinstance(value, Undefined):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, range)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Decimal):
        return float(value)
    return str(value)


def json_filter(value: object) -> str:
    """`{{ profile.traits | json }}`: JSON text (key order kept, non-ASCII as is)."""
    return json_lib.dumps(_plain(value), ensure_ascii=False, separators=(",", ":"))


def money(value: object, currency: object = None) -> str:
    """`{{ 19.9 | money }}` -> `$19.90`: a decimal amount (not cents), in `currency` or the
    workspace's. Blank for a missing or non-numeric amount."""
    if isinstance(value, Undefined) or value is None or isinstance(value, bool):
        return ""
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return ""
    if not amount.is_finite():
        return ""
    code = (str(currency) if currency and not isinstance(currency, Undefined)
            else _current().currency).upper()
    places = Decimal(1) if code in _NO_CENTS else Decimal("0.01")
    text = f"{abs(amount.quantize(places, rounding=ROUND_HALF_UP)):,}"
    sign = "-" if amount < 0 else ""
    symbol = _SYMBOLS.get(code)
    return f"{sign}{symbol}{text}" if symbol else f"{sign}{text} {code}"


def _zone(name: object) -> ZoneInfo | None:
    if not isinstance(name, str) or not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("now", "today"):
            return datetime.now(UTC)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def date_filter(value: object, fmt: object = None, zone: object = None) -> str:
    """`{{ event.occurred_at | date: '%b %-d, %Y' }}`: strftime syntax, in `zone`, else the
    customer's zone (profile `timezone`), else the workspace's. Blank for a missing
    value; a value that isn't a date is written as it is (as Shopify does)."""
    if isinstance(value, Undefined) or value is None or value == "":
        return ""
    at = _as_datetime(value)
    if at is None:
        return str(value)
    options = _current()
    tz = _zone(zone) or _zone(options.timezone) or UTC
    pattern = str(fmt) if fmt and not isinstance(fmt, Undefined) else "%Y-%m-%d %H:%M"
    try:
        return at.astimezone(tz).strftime(pattern)
    except ValueError as exc:
        raise FilterError(f"date: bad format {pattern!r}") from exc


def url_encode(value: object) -> str:
    """`{{ 'a b&c' | url_encode }}` -> `a+b%26c` (form encoding, as Shopify)."""
    if isinstance(value, Undefined) or value is None:
        return ""
    return quote_plus(str(value), safe="")


def code(value: object) -> str:
    """`{{ 'welcome-20' | code }}`: this customer's code from that pool."""
    pool = "" if isinstance(value, Undefined) or value is None else str(value)
    if not pool:
        raise FilterError("code: needs a pool key, e.g. {{ 'pool-key' | code }}")
    options = _current()
    if options.codes is None:
        if pool not in options.pools:
            options.pools.append(pool)
        return CODE_PLACEHOLDER.format(pool)
    found = options.codes.get(pool)
    if found is None:
        raise FilterError(f"code pool {pool} has no code for this message")
    return found


FILTERS = {"json": json_filter, "money": money, "date": date_filter,
           "url_encode": url_encode, "code": code}
