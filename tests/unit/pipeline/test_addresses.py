"""pipeline.addresses: which URLs and addresses litminer sends its own requests to."""

import pytest

from pipeline.addresses import AddressRefused, PrivateAddress, check_url, http_target, is_public


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # a cloud's metadata service
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",  # multicast, which ipaddress counts as global
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "fe80::1%eth0",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
    ],
)
def test_non_public_addresses_are_refused(address):
    assert not is_public(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert is_public(address)


def test_http_target_gives_the_host_in_lower_case_and_the_default_port():
    assert http_target("https://Example.ORG/hook") == ("example.org", 443)
    assert http_target("http://example.org/hook") == ("example.org", 80)
    assert http_target("http://example.org:8080/") == ("example.org", 8080)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.org/file", "not an http(s) URL (ftp)"),
        ("example.org/hook", "not an http(s) URL (none)"),
        ("http:///path-only", "not an http(s) URL (http)"),
        ("http://example.org:99999/", "not a valid port"),
        ("http://[::1/", "not a valid URL"),
    ],
)
def test_other_urls_are_refused_saying_why(url, reason):
    with pytest.raises(AddressRefused, match=reason.replace("(", r"\(").replace(")", r"\)")):
        http_target(url)


def test_a_literal_private_address_is_refused_unless_its_host_is_allowed():
    with pytest.raises(PrivateAddress, match=r"a private address \(10\.1\.2\.3\)"):
        check_url("http://10.1.2.3/hook", allowed_hosts=())
    assert check_url("http://10.1.2.3/hook", allowed_hosts={"10.1.2.3"}) == "10.1.2.3"


def test_a_name_resolving_to_loopback_is_refused():
    with pytest.raises(PrivateAddress, match="localhost"):
        check_url("http://localhost:8000/hook", allowed_hosts=())


def test_an_unknown_host_is_refused():
    with pytest.raises(AddressRefused, match="unknown host"):
        check_url("https://no-such-host.invalid/hook", allowed_hosts=())
