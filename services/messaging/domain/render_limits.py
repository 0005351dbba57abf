"""Render limits: 1 MB of output, 1 s of CPU, and no value a filter makes bigger than the
output, whatever the template does.

liquid's own limits bound the output stream, one loop's iterations and `assign`, but not
what a filter allocates: ten chained `replace` filters in 257 bytes of template grow a
string past a gigabyte before anything is written. So every filter is wrapped
(`guarded`): its input and its result are checked (strings at most the output limit,
sequences at most `ITEMS_LIMIT` items, integers at most 2**63), and `replace`/`join`
are checked *before* they run, from the sizes they would produce. With every value so
bounded, a render's memory growth stays a small multiple of the output limit (the tests
measure it under 64 MB). The CPU deadline is checked every 16th step, a step being a
filter call or a node rendered (`LimitedContext`), so loops of any shape stop within
about 1 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from contextvars import ContextVar
from functools import wraps
from typing import Any, cast

from liquid import RenderContext
from liquid.exceptions import LiquidError

OUTPUT_LIMIT = 1024 * 1024  # bytes of output; characters for a value inside a render
ITEMS_LIMIT = OUTPUT_LIMIT // 8  # items of a sequence (a pointer each)
INT_LIMIT = 2**63
CPU_LIMIT_S = 1.0


class TemplateLimitError(LiquidError):
    """A render went over a limit: the send fails with `template limit: ...`."""

    def __init__(self, what: str) -> None:
        super().__init__(f"template limit: {what}", token=None)


class FilterValueError(LiquidError):
    """A filter could not work with its value (an overflow, a bad argument)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, token=None)


class _Budget:
    """The CPU clock is read every 16th step (a node rendered or a filter called): reading
    it costs about a microsecond, and 16 steps, each bounded by the value limits, take
    milliseconds at most."""

    __slots__ = ("deadline", "steps")

    def __init__(self, seconds: float) -> None:
        self.deadline = time.thread_time() + seconds
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps & 15 == 0 and time.thread_time() > self.deadline:
            raise TemplateLimitError(f"over {CPU_LIMIT_S:g} s of CPU")


_budget: ContextVar[_Budget | None] = ContextVar("render_budget", default=None)


@contextmanager
def cpu_budget(seconds: float = CPU_LIMIT_S) -> Iterator[None]:
    """One budget for everything rendered inside (every part of one message)."""
    token = _budget.set(_Budget(seconds))
    try:
        yield
    finally:
        _budget.reset(token)


class LimitedContext(RenderContext):
    """liquid reads `disabled_tags` before rendering every node: the one hook every loop
    body, branch and output passes through, so the CPU deadline is checked there."""

    __slots__ = ("_disabled",)

    @property
    def disabled_tags(self) -> list[str]:
        budget = _budget.get()
        if budget is not None:
            budget.step()
        return self._disabled

    @disabled_tags.setter
    def disabled_tags(self, value: list[str]) -> None:
        self._disabled = value




def check_value(value: object) -> None:
    """Raise when a value is bigger than a render may make it."""
    kind = type(value)  # not isinstance: a strict undefined raises on `__class__`
    if issubclass(kind, str):
        if len(cast(str, value)) > OUTPUT_LIMIT:
            raise TemplateLimitError("a value over 1 MB")
    elif issubclass(kind, (list, tuple, range, dict)):
        if len(cast(Sized, value)) > ITEMS_LIMIT:
            raise TemplateLimitError(f"a list over {ITEMS_LIMIT} items")
    elif kind is int and abs(cast(int, value)) > INT_LIMIT:
        raise TemplateLimitError("a number over 2**63")


def _text(value: object) -> str:
    return value if type(value) is str else "" if value is None else str(value)


def _before_replace(val: object, seq: object = "", sub: object = "", *_: Any,
                    **__: Any) -> None:
    s, old, new = _text(val), _text(seq), _text(sub)
    count = len(s) + 1 if not old else s.count(old)
    if len(s) + count * (len(new) - len(old)) > OUTPUT_LIMIT:
        raise TemplateLimitError("a value over 1 MB")


def _before_join(val: object, sep: object = " ", *_: Any, **__: Any) -> None:
    if not issubclass(type(val), (list, tuple, range)):
        return
    gap, total = len(_text(sep)), 0
    for item in cast(Iterable[object], val):
        total += len(_text(item)) + gap
        if total > OUTPUT_LIMIT:
            raise TemplateLimitError("a value over 1 MB")


_BEFORE: dict[str, Callable[..., None]] = {"replace": _before_replace, "join": _before_join}


def guarded(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` with its input, result and the CPU deadline checked (see the module doc)."""
    before = _BEFORE.get(name)

    @wraps(func)  # keeps liquid's `with_context`/`with_environment` markers
    def filter_(*args: Any, **kwargs: Any) -> Any:
        budget = _budget.get()
        if budget is not None:
            budget.step()
        if args:
            check_value(args[0])
        if before is not None:
            before(*args, **kwargs)
        try:
            result = func(*args, **kwargs)
        except LiquidError:
            raise
        except (ArithmeticError, ValueError, TypeError, LookupError, OSError) as exc:
            # e.g. `'1e400' | round` (OverflowError): the template's fault, not a crash
            raise FilterValueError(f"{name}: {type(exc).__name__}") from exc
        check_value(result)
        return result

    for marker in ("with_context", "with_environment"):
        if getattr(func, marker, False):
            setattr(filter_, marker, True)
    return filter_
