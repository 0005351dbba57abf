"""Property tests (hypothesis) of the pure pieces the reliability promises rest on: the DLQ
ratio limit, the durable retry delays, the per-customer send workers, the reconciliation."""

from __future__ import annotations

import asyncio
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from services.messaging.domain.pacing import retry_delay
from services.messaging.ledger import per_customer
from shared.kafka.consumer import DeadLetterRatio
from tests.reliability.harness import reconcile


@given(st.integers(10, 200), st.floats(0.05, 1.0),
       st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), max_size=40))
def test_dead_letter_ratio_is_the_share_of_the_last_window(
        window: int, max_ratio: float, polls: list[tuple[int, int]]) -> None:
    ratio = DeadLetterRatio(max_ratio, window)
    seen: list[bool] = []
    for good, dead in polls:
        ratio.add(good, dead)
        seen += [True] * dead + [False] * good
        last = seen[-window:]
        share = sum(last) / len(last) if last else 0.0
        assert abs(ratio.ratio - share) < 1e-9
        assert ratio.exceeded() == (len(last) >= window // 5 and share > max_ratio)


@given(st.integers(1, 40), st.floats(0.1, 60), st.floats(1, 3600),
       st.none() | st.floats(0, 7200), st.floats(0.8, 1.2))
def test_retry_delay_grows_within_its_cap_and_honours_retry_after(
        tries: int, base: float, cap: float, retry_after: float | None, jitter: float) -> None:
    delay = retry_delay(tries, base=base, cap=cap, retry_after=retry_after,
                        rand=lambda _a, _b: jitter)
    plain = min(cap, base * 2 ** (tries - 1)) * jitter
    assert delay == max(plain, retry_after or 0.0)
    assert delay <= max(cap * 1.2, retry_after or 0.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=0, max_size=12), st.integers(1, 6),
       st.randoms(use_true_random=False))
def test_per_customer_keeps_order_and_one_worker_per_customer(
        sizes: list[int], limit: int, rnd) -> None:  # type: ignore[no-untyped-def]
    groups = [[(c, n) for n in range(size)] for c, size in enumerate(sizes)]
    busy: set[int] = set()
    log: list[tuple[int, int]] = []
    workers = [0, 0]  # running now, most at once

    def running(delta: int) -> None:
        workers[0] += delta
        workers[1] = max(workers[1], workers[0])

    async def call(item: tuple[int, int]) -> tuple[int, int]:
        assert item[0] not in busy
        busy.add(item[0])
        await asyncio.sleep(rnd.random() / 1000)
        log.append(item)
        busy.discard(item[0])
        return item

    results = asyncio.run(per_customer(groups, limit, call, running=running))
    assert results == [i for g in groups for i in g]
    for c in range(len(sizes)):
        assert [i for i in log if i[0] == c] == groups[c]
    assert workers == [0, min(limit, len(groups))]


@given(st.dictionaries(st.text("abc", min_size=1, max_size=3),
                       st.tuples(st.sampled_from(["sent", "unknown", "failed"]),
                                 st.integers(0, 2)), max_size=10))
def test_reconcile_counts_each_kind_once(sends: dict[str, tuple[str, int]]) -> None:
    rows = {k: {"id": f"m-{k}", "status": s} for k, (s, _) in sends.items()}
    delivered = Counter({f"m-{k}": n for k, (_, n) in sends.items() if n})
    delivered["stray"] += 1
    f = reconcile("property", rows, set(sends), delivered)
    assert f.lost == sorted(k for k, (s, n) in sends.items() if n == 0 and s != "unknown")
    assert f.duplicated == sorted(k for k, (_, n) in sends.items() if n > 1)
    assert f.unexpected == ["stray"]
    assert f.unknown == sum(1 for s, _ in sends.values() if s == "unknown")
