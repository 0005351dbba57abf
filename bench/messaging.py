"""Messaging throughput: send commands/s through render + consent check + SMTP delivery,
next to the ceiling of raw aiosmtplib sends to the same SMTP sink in the same run; and
Liquid renders/s of a typical template.

Starts a Tansu broker, a scratch Postgres database and an SMTP sink in its own process
(counting only). The ceiling sends pre-built emails over as many persistent aiosmtplib
connections as the messaging SMTP pool has. The target is the messaging service's send
consumer (in this process): commands are produced to its topic, and the clock runs from
the first produce to the last email counted at the sink.

    .venv/bin/python bench/messaging.py [--emails 5000] [--renders 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage

import aiosmtplib
import httpx

from services.messaging.app import create_app
from services.messaging.domain.render import render, template_data
from services.messaging.providers.email import Settings as SmtpSettings
from shared.contracts.envelope import message_key
from shared.contracts.send import Channel, Recipient, SendCommand
from shared.db.migrate import upgrade_all
from shared.kafka import create_producer, publish
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from shared.testing.broker import tansu_broker
from shared.testing.net import free_port, wait_for_port
from shared.testing.postgres import postgres_server, scratch_database
from shared.testing.ready import wait_ready
from shared.testing.servers import serve_app

ADMIN = f"tp_admin_bench_{uuid.uuid4().hex}"
POOL = SmtpSettings(host="x", sender="x@x.io").pool_size
SINK = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
class Count:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        Count.n += 1
        return "250 OK"
async def main(port):
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: SMTP(Count(), hostname="sink"), "127.0.0.1", port)
    last = -1
    while True:
        await asyncio.sleep(0.005)
        if Count.n != last:
            last = Count.n
            print(last, flush=True)
asyncio.run(main(int(sys.argv[1])))
"""
SUBJECT = "{{ profile.traits.first_name | default: 'Hi' }}, your cart is waiting"
HTML = """<html><body><h1>Hi {{ profile.traits.first_name | default: 'there' }}</h1>
<p>You left {{ event.properties.items | size }} items in your cart:</p><ul>
{% for item in event.properties.items %}<li><a href="https://shop.example/p/{{ item.sku }}">
{{ item.name }}</a> - {{ item.price }} {{ event.properties.currency }}</li>{% endfor %}</ul>
{% if profile.metrics.order_count > 0 %}<p>Welcome back, loyal customer!</p>{% endif %}
<p><a href="https://shop.example/cart">Return to your cart</a></p></body></html>"""
TEXT = """Hi {{ profile.traits.first_name | default: 'there' }},
{% for item in event.properties.items %}- {{ item.name }}: {{ item.price }}
{% endfor %}https://shop.example/cart"""
# The most common shape: a greeting, a few profile/event variables with defaults, one link.
WELCOME_SUBJECT = "Welcome, {{ profile.traits.first_name | default: 'friend' }}!"
WELCOME_HTML = """<p>Hi {{ profile.traits.first_name | default: 'there' }},</p>
<p>Thanks for joining {{ event.properties.shop | default: 'our shop' }}. Your code:
<b>{{ event.properties.code }}</b></p><p><a href="https://shop.example/start">Start</a></p>"""
CONTEXT = {"profile": {"traits": {"first_name": "Ada"}, "metrics": {"order_count": 2},
                       "consent": {"email": True}},
           "event": {"event": "Cart Abandoned", "properties": {"currency": "EUR", "items": [
               {"sku": f"s{i}", "name": f"Item {i}", "price": 9.5 + i} for i in range(3)],
               "shop": "Shop", "code": "WELCOME10"}}}


class Sink:
    def __init__(self, port: int) -> None:
        self.port, self.count = port, 0
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SINK, str(self.port), stdout=asyncio.subprocess.PIPE)
        asyncio.get_running_loop().create_task(self._read())
        await asyncio.to_thread(wait_for_port, self.port)

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        while line := await self.proc.stdout.readline():
            self.count = int(line)

    async def wait_for(self, count: int, timeout: float = 120) -> float:
        deadline = time.perf_counter() + timeout
        while self.count < count:
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{self.count} of {count} emails")
            await asyncio.sleep(0.002)
        return time.perf_counter()

    def stop(self) -> None:
        if self.proc:
            self.proc.kill()


def bench_render(n: int) -> dict[str, float]:
    """Renders/s of each part alone and of the whole email (all three parts)."""
    data = template_data(CONTEXT, message_id="m", unsubscribe_url="https://t/u/x")
    none = {"subject": None, "html": None, "text": None}
    parts = {"welcome html body (typical)": {**none, "html": WELCOME_HTML},
             "welcome email, subject + html": {**none, "subject": WELCOME_SUBJECT,
                                               "html": WELCOME_HTML},
             "cart subject": {**none, "subject": SUBJECT},
             "cart text body": {**none, "text": TEXT},
             "cart html body (loop)": {**none, "html": HTML},
             "cart email, all 3 parts": {"subject": SUBJECT, "html": HTML, "text": TEXT}}
    out = {}
    for name, sources in parts.items():
        render(**sources, data=data)  # parse once (cached)
        start = time.perf_counter()
        for _ in range(n):
            render(**sources, data=data)
        out[name] = n / (time.perf_counter() - start)
    return out


async def bench_ceiling(sink: Sink, n: int) -> float:
    """Raw aiosmtplib: pre-built messages over POOL persistent connections."""
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "shop@x.io", "ada@example.com", "Hi"
    mail.set_content("x" * 600)
    mail.add_alternative("<p>" + "x" * 1500 + "</p>", subtype="html")
    raw = mail.as_bytes()
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port) for _ in range(POOL)]
    await asyncio.gather(*(c.connect() for c in clients))
    base, share = sink.count, [n // POOL + (i < n % POOL) for i in range(POOL)]

    async def run(client: aiosmtplib.SMTP, count: int) -> None:
        for _ in range(count):
            await client.sendmail("shop@x.io", ["ada@example.com"], raw)

    start = time.perf_counter()
    await asyncio.gather(*(run(c, k) for c, k in zip(clients, share, strict=True)))
    end = await sink.wait_for(base + n)
    await asyncio.gather(*(c.quit() for c in clients))
    return n / (end - start)


async def bench_messaging(settings: Settings, sink: Sink, n: int) -> tuple[float, float]:
    """Emails/s, and the CPU seconds this process spent per email (the service's work plus
    producing the commands), the figure the 2-core machine's noise moves least."""
    app = create_app(settings)
    producer = create_producer(settings, client_id="bench")
    await producer.start()
    topic = settings.topic("send-commands")

    def cmd(i: int) -> SendCommand:
        key = f"bench-{uuid.uuid4().hex}"
        return SendCommand(id=key, workspace_id="default", profile_id=str(uuid.uuid4()),
                           idempotency_key=key, channel=Channel.email, template="cart",
                           to=Recipient(email=f"c{i}@example.com"), context=CONTEXT,
                           requested_at=datetime.now(UTC))

    async with serve_app(app) as url, httpx.AsyncClient(
            headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        await wait_ready(http, url, timeout=60)
        r = await http.put(f"{url}/v1/templates/cart", json={
            "channel": "email", "subject": SUBJECT, "html": HTML, "text": TEXT})
        r.raise_for_status()
        warm = cmd(-1)  # waits out the consumer group join
        base = sink.count
        await publish(producer, topic, [(message_key("default", warm.profile_id), warm)],
                      topic_short="send-commands")
        await sink.wait_for(base + 1)
        commands = [cmd(i) for i in range(n)]
        base = sink.count
        start, cpu = time.perf_counter(), time.process_time()
        for i in range(0, n, 1000):
            await publish(producer, topic, [(message_key("default", c.profile_id), c)
                                            for c in commands[i:i + 1000]],
                          topic_short="send-commands", timeout=30)
        end = await sink.wait_for(base + n)
        cpu = time.process_time() - cpu
    await producer.stop()
    return n / (end - start), cpu / n


async def main(emails: int, renders: int) -> None:
    rates = bench_render(renders)
    print(f"render (python-liquid, sandboxed; {renders} renders each; the cart email loops "
          "over 3 items; the pipeline below sends the cart email):")
    for name, per_s in rates.items():
        print(f"  {name:30s} {per_s:9,.0f} renders/s")
    with postgres_server() as server, scratch_database(server) as db_url, \
            tansu_broker() as bootstrap:
        await asyncio.to_thread(upgrade_all, db_url)
        sink = Sink(free_port())
        await sink.start()
        settings = Settings(env="test", database_url=db_url, kafka_bootstrap=bootstrap,
                            topic_prefix=f"bench-{uuid.uuid4().hex[:6]}.",
                            smtp_url=f"smtp://127.0.0.1:{sink.port}", bootstrap_admin_key=ADMIN,
                            consumer_fetch_max_wait_ms=10, consumer_session_timeout_ms=6000)
        await ensure_topics(settings)
        try:
            ceiling = await bench_ceiling(sink, emails)
            target, cpu = await bench_messaging(settings, sink, emails)
        finally:
            sink.stop()
    print(f"ceiling: raw aiosmtplib, {POOL} persistent connections, pre-built emails: "
          f"{ceiling:,.0f} emails/s")
    print(f"messaging: send commands -> render + consent check + SMTP ({emails} emails, "
          f"{settings.topic_partitions} partitions): {target:,.0f} emails/s")
    print(f"  CPU of the messaging process: {cpu * 1000:.2f} ms per email (its work plus "
          "producing the commands)")
    print(f"ratio messaging / ceiling = {target / ceiling:.2f}")
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emails", type=int, default=5000)
    parser.add_argument("--renders", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(main(args.emails, args.renders))
