"""Messaging throughput: send commands/s through render + consent check + SMTP delivery,
next to the ceiling of raw aiosmtplib sends to the same SMTP sink in the same run; and
Liquid renders/s of a typical template.

Starts a Tansu broker, a scratch Postgres database and an SMTP sink in its own process
(counting only). The ceiling sends the service's own cart email, pre-built, over as many
persistent aiosmtplib connections as the messaging SMTP pool has. The target is the
messaging service run as deployed (`touchpoint serve messaging` processes: one, then two
replicas in one consumer group): this process produces the send commands, as the journey
service would, and the clock runs from the first produce to the last email counted at
the sink. Everything runs on uvloop, as `touchpoint serve` does.

    .venv/bin/python bench/messaging.py [--emails 10000] [--renders 20000] [--replicas 1 2]
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import _root  # noqa: F401  (the repository root on sys.path: tests.support)
import aiosmtplib
import httpx
import orjson
import psutil
import uvloop
from aiokafka import AIOKafkaConsumer

from services.messaging.domain.render import Rendered, render, template_data
from services.messaging.parts import Messaging
from services.messaging.prepare import prepare
from services.messaging.providers.email import Settings as SmtpSettings
from services.messaging.providers.email import build_email
from services.messaging.settings import MessagingSettings
from services.messaging.store import SendState
from shared.contracts.envelope import message_key
from shared.contracts.send import Channel, Recipient, SendCommand
from shared.db.migrate import upgrade_all
from shared.kafka import create_producer, publish
from shared.kafka.admin import ensure_topics
from shared.settings import Settings
from tests.support.broker import tansu_broker
from tests.support.measure import consumed, cpu_seconds, processes
from tests.support.net import free_port, wait_for_port
from tests.support.options import bench_options
from tests.support.postgres import postgres_server, scratch_database
from tests.support.processes import die_with_parent
from tests.support.ready import wait_ready

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


async def until(counted: Callable[[], int], count: int, what: str, timeout: float = 120
                ) -> float:
    """The clock once `counted()` reaches `count` (polled every 2 ms)."""
    deadline = time.perf_counter() + timeout
    while counted() < count:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{counted()} of {count} {what}")
        await asyncio.sleep(0.002)
    return time.perf_counter()


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

    async def wait_for(self, count: int) -> float:
        return await until(lambda: self.count, count, "emails")

    def cpu(self) -> float:
        """CPU seconds the sink has spent so far."""
        assert self.proc
        return cpu_seconds({"sink": [psutil.Process(self.proc.pid)]})["sink"]

    def stop(self) -> None:
        if self.proc:
            self.proc.kill()


class Published:
    """Counts the `sent` delivery events of the timed commands as they reach the topic: the
    run's CPU window ends when every one is published, not when the sink counts the last
    email, so a build that publishes them later (a sweeper, a queue) is charged for that
    work as well (issue 12's before/after pairs compare two ways of publishing them)."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = AIOKafkaConsumer(
            settings.topic("delivery-events"), bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=20)
        self.expected: set[str] = set()
        self.seen = 0
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for record in self.consumer:
            event = orjson.loads(record.value)
            if event.get("status") == "sent" and event.get("idempotency_key") in self.expected:
                self.expected.discard(event["idempotency_key"])
                self.seen += 1

    async def wait_for(self, count: int) -> float:
        return await until(lambda: self.seen, count, "delivery events")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
        await self.consumer.stop()


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


def service_email(settings: Settings) -> bytes:
    """The cart email byte for byte as the service sends it (rendered, links tracked,
    unsubscribe footer and headers), so the sink does the same work in both runs."""
    m = Messaging(MessagingSettings.from_base(settings))
    state = SendState(templates={("default", "cart"): {
        "channel": "email", "subject": SUBJECT, "html": HTML, "text": TEXT,
        "category": "marketing", "topic": None, "version": 1, "strict": False}})
    command = cmd(0)
    out = prepare(m, command, str(uuid.uuid4()), state, [f"{command.to.email}"]).outbound[0]
    return build_email(sender=settings.email_from, to=out.to, message_id=out.message_id,
                       rendered=Rendered(out.subject, out.html, out.text), headers=out.headers)


async def bench_ceiling(sink: Sink, raw: bytes, n: int) -> tuple[float, float, float]:
    """Raw aiosmtplib: a pre-built message over POOL persistent connections. Emails/s, and
    the CPU seconds per email this process and the sink spent."""
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=sink.port) for _ in range(POOL)]
    await asyncio.gather(*(c.connect() for c in clients))
    base, share = sink.count, [n // POOL + (i < n % POOL) for i in range(POOL)]

    async def run(client: aiosmtplib.SMTP, count: int) -> None:
        for _ in range(count):
            await client.sendmail("shop@x.io", ["c0@example.com"], raw)

    start, cpu, sink_cpu = time.perf_counter(), time.process_time(), sink.cpu()
    await asyncio.gather(*(run(c, k) for c, k in zip(clients, share, strict=True)))
    end = await sink.wait_for(base + n)
    cpu, sink_cpu = time.process_time() - cpu, sink.cpu() - sink_cpu
    await asyncio.gather(*(c.quit() for c in clients))
    return n / (end - start), cpu / n, sink_cpu / n


def cmd(i: int) -> SendCommand:
    key = f"bench-{uuid.uuid4().hex}"
    return SendCommand(id=key, workspace_id="default", profile_id=str(uuid.uuid4()),
                       idempotency_key=key, channel=Channel.email, template="cart",
                       to=Recipient(email=f"c{i}@example.com"), context=CONTEXT,
                       requested_at=datetime.now(UTC))


async def bench_messaging(env: dict[str, str], settings: Settings, sink: Sink, n: int,
                          replicas: int) -> tuple[float, dict[str, float], float]:
    """Emails/s through `replicas` messaging processes started as deployed (`touchpoint
    serve messaging`: uvicorn on uvloop), one consumer group; and the CPU seconds per
    email of every process the run keeps busy, until every `sent` delivery event is on its
    topic (and how long after the last email that was).
    Commands are produced from this process, as the journey service would."""
    settings = settings.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:6]}."})
    await ensure_topics(settings)
    env = {**env, "TOUCHPOINT_TOPIC_PREFIX": settings.topic_prefix}
    ports = [free_port() for _ in range(replicas)]
    procs = [subprocess.Popen([sys.executable, "-m", "touchpoint.cli", "serve", "messaging",
                               "--port", str(port)], env=env, preexec_fn=die_with_parent)
             for port in ports]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    producer = create_producer(settings, client_id="bench")
    await producer.start()
    published = Published(settings)
    await published.start()
    topic = settings.topic("send-commands")

    async def send(commands: list[SendCommand]) -> None:
        for i in range(0, len(commands), 1000):
            await publish(producer, topic, [(message_key("default", c.profile_id), c)
                                            for c in commands[i:i + 1000]],
                          topic_short="send-commands", timeout=30)

    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ADMIN}"}) as http:
            for url in urls:
                await wait_ready(http, url, timeout=60)
            r = await http.put(f"{urls[0]}/v1/templates/cart", json={
                "channel": "email", "subject": SUBJECT, "html": HTML, "text": TEXT})
            r.raise_for_status()
            # Warm-up: until every replica has its partitions (the group has settled) and
            # every warm-up email arrived, so no join or backlog is timed.
            warm = 0
            while True:
                base = sink.count
                await send([cmd(-1) for _ in range(24)])
                await sink.wait_for(base + 24)
                warm += 24
                counts = [await consumed(http, url, "messaging.send-commands") for url in urls]
                if all(counts) and warm >= 48:
                    break
            commands = [cmd(i) for i in range(n)]
            published.expected = {c.idempotency_key for c in commands}
            assert sink.proc
            parts = processes({"service": [p.pid for p in procs], "sink": [sink.proc.pid]},
                              this="bench (producer)")
            cpu = cpu_seconds(parts)
            base = sink.count
            start = time.perf_counter()
            await send(commands)
            end = await sink.wait_for(base + n)
            done = await published.wait_for(n)
            cpu = {name: (spent - cpu[name]) / n for name, spent in cpu_seconds(parts).items()}
    finally:
        await producer.stop()
        await published.stop()
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    return n / (end - start), cpu, done - end


async def main(emails: int, renders: int, replicas: list[int]) -> None:
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
        settings = Settings(database_url=db_url, kafka_bootstrap=bootstrap,
                            smtp_url=f"smtp://127.0.0.1:{sink.port}", bootstrap_admin_key=ADMIN,
                            consumer_session_timeout_ms=6000)
        env = {**os.environ, "TOUCHPOINT_DATABASE_URL": db_url,
               "TOUCHPOINT_KAFKA_BOOTSTRAP": bootstrap, "TOUCHPOINT_SMTP_URL": settings.smtp_url,
               "TOUCHPOINT_BOOTSTRAP_ADMIN_KEY": ADMIN, "TOUCHPOINT_LOG_LEVEL": "WARNING",
               "TOUCHPOINT_CONSUMER_SESSION_TIMEOUT_MS": "6000"}
        try:
            raw = service_email(settings)
            ceiling, ceiling_cpu, ceiling_sink = await bench_ceiling(sink, raw, emails)
            results = {k: await bench_messaging(env, settings, sink, emails, k)
                       for k in replicas}
        finally:
            sink.stop()
    print(f"ceiling: raw aiosmtplib, {POOL} persistent connections, the service's cart email "
          f"pre-built ({len(raw):,} bytes): "
          f"{ceiling:,.0f} emails/s; CPU per email: client {ceiling_cpu * 1000:.2f} ms, "
          f"sink {ceiling_sink * 1000:.2f} ms")
    print(f"messaging: send commands -> render + consent check + SMTP ({emails} emails, "
          f"{settings.topic_partitions} partitions), `touchpoint serve messaging` processes:")
    for k, (rate, cpu, late) in results.items():
        total = sum(cpu.values())
        print(f"  {k} replica{'s' if k > 1 else ' '}: {rate:6,.0f} emails/s = "
              f"{rate / ceiling:.2f} of the ceiling")
        print("      CPU per email: " + ", ".join(f"{name} {seconds * 1000:.3f}"
                                                  for name, seconds in cpu.items())
              + f"; all {total * 1000:.2f} ms (2 cores at that cost: "
              f"{2 / total:,.0f} emails/s); the CPU until every delivery event was "
              f"published, {late * 1000:.0f} ms after the last email")
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = bench_options(__doc__, emails=10000, renders=20000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2],
                        help="messaging processes in the consumer group, one run each")
    args = parser.parse_args()
    # uvloop, as in production: `touchpoint serve` runs uvicorn, which picks uvloop.
    uvloop.run(main(args.emails, args.renders, args.replicas))
