"""Which network targets a webhook or push endpoint may reach."""

from __future__ import annotations

import ipaddress


def is_public_address(ip: str) -> bool:
    """False for loopback, private, link-local (cloud metadata), multicast and reserved ranges."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not addr.is_multicast
