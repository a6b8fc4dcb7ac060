import pytest

from fleet.core.values import check_hostname, check_ipv4, parse_mac


@pytest.mark.parametrize("text", ["52:54:00:AB:cd:01", "52-54-00-ab-cd-01", "5254.00ab.cd01",
                                  "525400abcd01", " 52:54:00:ab:cd:01 "])
def test_mac_forms_normalise(text):
    assert parse_mac(text) == "52:54:00:ab:cd:01"


@pytest.mark.parametrize("text", ["", "52:54:00:ab:cd", "52:54:00:ab:cd:01:02", "zz:54:00:ab:cd:01",
                                  "52:54:00-ab:cd:01x", "52545400abcd01"])
def test_bad_macs_are_refused(text):
    with pytest.raises(ValueError, match="not a MAC"):
        parse_mac(text)


@pytest.mark.parametrize("text", ["web1", "WEB-1.rack1.example", "a" * 63])
def test_good_hostnames(text):
    assert check_hostname(text) == text.lower()


@pytest.mark.parametrize("text", ["", "-web", "web-", "we b", "web1\nkernel x", "a;reboot",
                                  "web'1", "<b>x</b>", "a" * 64, "x..y", "${mac}"])
def test_hostnames_that_could_inject_are_refused(text):
    with pytest.raises(ValueError, match="not a valid hostname"):
        check_hostname(text)


def test_ipv4():
    assert check_ipv4(" 10.0.0.1") == "10.0.0.1"
    with pytest.raises(ValueError):
        check_ipv4("10.0.0.256")
