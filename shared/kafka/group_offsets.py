"""Starting a combined consumer group where the per-topic groups it replaces left off.

A service used to run one consumer group per topic (`<prefix><spec name>`, e.g.
`profile.events`); it now runs one group for all its topics (`<prefix><service>`). On each
assignment, a partition the new group has never committed starts at the offset the old
group committed for it (if any), so an upgrade neither reprocesses (beyond what the inbox
absorbs) nor skips records. Once the new group has committed, the old group is not read
again; it can be deleted (docs/deployment.md).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

log = logging.getLogger(__name__)


async def committed_offsets(bootstrap: str, group: str,
                            partitions: Collection[TopicPartition]) -> dict[TopicPartition, int]:
    """`group`'s committed offsets for these partitions (one OffsetFetch); absent if none."""
    if not partitions:
        return {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{group}-offsets")
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group, partitions=list(partitions))
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in found.items() if meta is not None and meta.offset >= 0}


class StartFromLegacyGroups(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment: seek partitions the group has no commit for to the old group's commit.

    `legacy` maps a topic to the group that consumed it before. Runs inside the rebalance,
    before the first fetch of the new assignment, on every assignment (two OffsetFetch
    requests at most: rebalances are rare). The adopted offsets are committed for the new
    group at once. A failure is kept in `failed` for the loop to raise.
    """

    def __init__(self, bootstrap: str, group: str, legacy: Mapping[str, str],
                 consumer: Callable[[], AIOKafkaConsumer | None],
                 before_revoke: Callable[[set[TopicPartition]], Awaitable[None]] | None = None
                 ) -> None:
        self.bootstrap, self.group, self.legacy = bootstrap, group, dict(legacy)
        self._consumer = consumer
        self._before_revoke = before_revoke  # the loop commits what it handled of them
        self.failed: Exception | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if self._before_revoke is not None:
            try:
                await self._before_revoke(revoked)
            except Exception as exc:  # the new owner re-reads them; the inbox absorbs it
                log.warning("consumer %s: commit before revoke failed (%s)", self.group,
                            type(exc).__name__)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer()
        todo = [tp for tp in assigned if tp.topic in self.legacy]
        if consumer is None or not todo:
            return
        # The fetcher starts on the new assignment at once (from `auto_offset_reset` where
        # the group has no commit): paused until placed, nothing of theirs reaches a poll.
        consumer.pause(*todo)
        try:
            own = await committed_offsets(self.bootstrap, self.group, todo)
            missing: dict[str, list[TopicPartition]] = defaultdict(list)
            for tp in todo:
                if tp not in own:
                    missing[self.legacy[tp.topic]].append(tp)
            adopted: dict[TopicPartition, int] = {}
            for old_group, tps in missing.items():
                offsets = await committed_offsets(self.bootstrap, old_group, tps)
                for tp, offset in offsets.items():
                    consumer.seek(tp, offset)
                    adopted[tp] = offset
                    log.info("consumer %s: %s[%d] starts at %d, where group %s left off",
                             self.group, tp.topic, tp.partition, offset, old_group)
            if adopted:
                # Committed for the new group at once: a partition without new records
                # would otherwise depend on the old group for as long as it exists.
                await consumer.commit(adopted)
        except Exception as exc:
            # Starting anywhere else could reprocess a topic from its start: the loop checks
            # `failed` before handling anything and restarts (and asks again) instead.
            log.warning("consumer %s: could not read the old groups' offsets (%s)", self.group,
                        type(exc).__name__)
            self.failed = exc
            return  # left paused
        current = consumer.assignment()
        consumer.resume(*[tp for tp in todo if tp in current])
