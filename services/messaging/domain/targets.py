"""Which network addresses a provider may connect to (the SSRF guard's rule, pure).

An address is public only when it is globally routable and no IPv6 spelling hides a
non-public IPv4 address inside it: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
(`::a.b.c.d`, deprecated: refused whatever it embeds), NAT64 (`64:ff9b::/96`, judged by the
IPv4 it embeds; the local-use `64:ff9b:1::/48` is refused) and 6to4 (`2002::/16`, judged by
the IPv4 it embeds). Refused besides: loopback, unspecified, private, shared (CGNAT),
link-local, site-local (`fec0::/10`), unique-local, multicast, reserved, documentation and
benchmarking ranges, Teredo, and the cloud metadata addresses.
"""

from __future__ import annotations

import ipaddress

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_TEREDO = ipaddress.ip_network("2001::/32")
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")
# Most are inside ranges refused anyway; listed so that no range table change can open them.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
    "169.254.170.2",  # AWS ECS task metadata
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",  # Oracle Cloud
    "fd00:ec2::254",  # AWS over IPv6
))


def embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 spelling carries (mapped, compatible, NAT64, 6to4)."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr in _NAT64 or addr in _IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(addr) & 0xFFFF_FFFF)
    return None


def _public_v4(addr: ipaddress.IPv4Address) -> bool:
    return (addr.is_global and not addr.is_multicast and not addr.is_reserved
            and not addr.is_private and addr not in METADATA_ADDRESSES)


def is_public_address(ip: str) -> bool:
    """True only for an address any provider may connect to (see the module docstring)."""
    if "%" in ip:  # a zone index only scopes link-local addresses
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv4Address):
        return _public_v4(addr)
    if addr in _IPV4_COMPATIBLE or addr in _NAT64_LOCAL or addr in _TEREDO \
            or addr in _SITE_LOCAL or addr in METADATA_ADDRESSES:
        return False
    inner = embedded_ipv4(addr)
    if inner is not None:
        return _public_v4(inner) and (addr.ipv4_mapped is not None or addr in _NAT64
                                      or not addr.is_private)
    return (addr.is_global and not addr.is_multicast and not addr.is_private
            and not addr.is_reserved and not addr.is_link_local and not addr.is_loopback)
