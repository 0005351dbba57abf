"""What wakes journey's background workers early (shared/alarm.py): instance timers and
broadcasts committed by this process. Callers announce work after their commit."""

from __future__ import annotations

from shared.alarm import Alarms

# Instances whose `wake_at` was written (handlers, the broadcast worker's entries).
TIMERS = Alarms()
# Broadcasts that were scheduled or started (the send and publish routes).
BROADCASTS = Alarms()
