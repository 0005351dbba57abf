"""Journey's own Prometheus metrics (served on /metrics with the shared ones)."""

from prometheus_client import Counter, Histogram

TIMERS_FIRED = Counter("touchpoint_journey_timers_fired_total", "Instance timers fired")
TIMER_LATENESS = Histogram(
    "touchpoint_journey_timer_lateness_seconds", "How late a timer fired after it was due",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60),
)
DECISIONS = Counter("touchpoint_journey_decisions_total",
                    "Engine decisions written (a batch that rolls back counts again on retry)",
                    ["kind", "outcome"])
