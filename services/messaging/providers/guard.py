"""The one way a provider reaches the network: resolve, check every address, connect to one
of the checked addresses (never to a name resolved again later).

Every provider goes through `allowed_addresses`: HTTP ones (SMS, push, FCM, webhooks) via
`pinned_target` in providers/http.py, SMTP via `connect_pinned`. The rule for an address is
`domain/targets.is_public_address`. A host whose name resolves to any non-public address is
refused as a whole (a mixed answer is how DNS rebinding starts). `allow_private` skips the
check: it is true for the operator's own default email channel (TOUCHPOINT_SMTP_URL), and for
a channel with `allow_private_targets` only where the operator allowed that
(TOUCHPOINT_MESSAGING_ALLOW_PRIVATE_TARGETS).
"""

from __future__ import annotations

import asyncio
import socket

from services.messaging.domain.targets import is_public_address
from services.messaging.providers.base import PermanentFailure, TransientFailure


async def allowed_addresses(host: str, port: int, *,
                            allow_private: bool) -> list[tuple[socket.AddressFamily, str]]:
    """(family, address) of `host`, every one checked; PermanentFailure if one is private."""
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(name, port,
                                                             type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TransientFailure(f"cannot resolve {host}") from exc
    addresses: list[tuple[socket.AddressFamily, str]] = list(
        dict.fromkeys((socket.AddressFamily(info[0]), str(info[4][0])) for info in infos))
    if not addresses:
        raise TransientFailure(f"cannot resolve {host}")
    if not allow_private and not all(is_public_address(ip) for _family, ip in addresses):
        raise PermanentFailure(f"blocked: {host} resolves to a private, loopback or metadata "
                               "address (private targets are not allowed for this channel)")
    return addresses


async def connect_pinned(host: str, port: int, *, allow_private: bool,
                         timeout: float) -> socket.socket:
    """A connected, non-blocking TCP socket to a checked address of `host`."""
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for family, ip in await allowed_addresses(host, port, allow_private=allow_private):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (ip, port)), timeout)
        except (OSError, TimeoutError) as exc:
            sock.close()
            last = exc if isinstance(exc, OSError) else OSError(f"timed out: {exc}")
            continue
        return sock
    raise TransientFailure(f"cannot connect to {host}:{port}: "
                           f"{type(last).__name__ if last else 'no address'}")
