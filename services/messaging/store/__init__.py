"""Messaging's database operations: all of its SQL but the migrations'. Functions take a
connection; callers own transactions.

- connection.py: asyncpg transactions and connections (why: see there);
- send_state.py: what send-time checks read for a batch;
- sends.py: the send path's statements on the message log (claim, marks, outcomes,
  test sends, the retry sweeper's leases);
- codes.py: discount codes handed out and released;
- channels.py: channel configurations and the shared rate-limit buckets;
- consents.py, addresses.py, erasure.py: what profile changes and unsubscribes write;
- messages.py: the message log's filter and engagement marks;
- templates.py: templates, versions and snippets;
- outbox.py: delivery events into the outbox.
"""

from services.messaging.store.addresses import mark_deliverable_many, mark_undeliverable
from services.messaging.store.connection import Driver, driver, one_statement, transaction
from services.messaging.store.consents import merge_consents, record_consent
from services.messaging.store.erasure import erase_profile
from services.messaging.store.messages import message_filter, touch_message
from services.messaging.store.outbox import emit
from services.messaging.store.send_state import SendState, load_send_state

__all__ = ["Driver", "SendState", "driver", "emit", "erase_profile", "load_send_state",
           "mark_deliverable_many", "mark_undeliverable", "merge_consents",
           "message_filter", "one_statement", "record_consent", "touch_message", "transaction"]
