"""The SSRF rule: every spelling of a non-public address is refused, public ones pass."""

from __future__ import annotations

import pytest

from services.messaging.domain.targets import is_public_address

BLOCKED = [
    # IPv4: loopback, unspecified, private, CGNAT, link-local/metadata, multicast, broadcast,
    # benchmarking, reserved, documentation, the metadata addresses of the big clouds
    "127.0.0.1", "127.255.255.254", "0.0.0.0", "10.0.0.1", "172.16.0.1", "192.168.1.1",
    "100.64.0.1", "169.254.169.254", "169.254.170.2", "100.100.100.200", "192.0.0.192",
    "224.0.0.1", "239.255.255.250", "255.255.255.255", "198.18.0.1", "240.0.0.1", "192.0.2.1",
    # IPv6: loopback, unspecified, link-local (with a zone too), unique-local (AWS metadata),
    # site-local fec0::/10, multicast, documentation, Teredo, discard-only
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd00:ec2::254", "fec0::1", "feff::1",
    "ff02::1", "ff0e::1", "2001:db8::1", "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "100::1",
    # IPv4-mapped (both spellings), IPv4-compatible (refused whatever it embeds)
    "::ffff:127.0.0.1", "::ffff:7f00:1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",
    "::127.0.0.1", "::7f00:1", "::8.8.8.8", "::ffff:0:0",
    # NAT64 embedding a private IPv4; the local-use NAT64 prefix
    "64:ff9b::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::10.0.0.1",
    "64:ff9b::c0a8:101", "64:ff9b:1::808:808",
    # 6to4 embedding a private IPv4
    "2002:7f00:1::", "2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:c0a8:101::1", "2002:a00:1::1",
    # not addresses at all
    "localhost", "nonsense", "",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111",
          "2a00:1450:4001:80b::200e", "64:ff9b::8.8.8.8", "2002:808:808::1", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", BLOCKED)
def test_non_public_spellings_are_refused(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert is_public_address(address)
