"""The network promise: loopback without CurveZMQ, any other address with it unless opted out."""

import pytest

from pp_notebook.cluster import transport


def test_loopback_needs_no_encryption_and_other_addresses_get_it_by_default():
    assert transport.encryption_args("127.0.0.1") == ["--IPController.enable_curve=False"]
    assert transport.encryption_args("10.1.2.3") == ["--IPController.enable_curve=True"]
    assert transport.encryption_args("10.1.2.3", encrypt=False) == [
        "--IPController.enable_curve=False"]
    assert transport.encryption_args("127.0.0.1", encrypt=True) == [
        "--IPController.enable_curve=True"]


def test_an_interface_name_gives_its_ipv4_address_and_none_gives_loopback():
    assert transport.controller_address(None) == "127.0.0.1"
    assert transport.controller_address("lo") == "127.0.0.1"
    assert transport.controller_address("10.1.2.3") == "10.1.2.3"
    assert transport.is_loopback(transport.controller_address("localhost"))


def test_an_unknown_address_names_the_interfaces_there_are():
    with pytest.raises(ValueError, match=r"neither an IP address.*\blo\b"):
        transport.controller_address("no-such-host.invalid")
