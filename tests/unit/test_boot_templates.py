"""The template renderer: `{{ name }}` only, unknown placeholders are errors with the
line, values validated per the escaping rules, keys joined per kind; the
profile's own templates render completely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fleet.boot.templates import TemplateValues, render, render_deployment
from fleet.core.templates import TemplateError, placeholders

TEMPLATES = Path(__file__).resolve().parents[2] / "profiles" / "templates"
KEY1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOa0 ops@example"
KEY2 = 'from="10.0.0.0/8" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOa1 backup'


def values(kind="preseed", **changes) -> TemplateValues:
    base = dict(hostname="web7", address="10.91.0.50", mac="52:54:00:12:34:56",
                deployment="debian12", kind=kind, token="12.abcdef234567",
                callhome_url="http://10.77.0.1:8080/api/callhome",
                template_url="http://10.77.0.1:8080/templates/12.zzz",
                authorized_keys=(KEY1, KEY2))
    base.update(changes)
    return TemplateValues(**base)


def test_substitution_only():
    assert render("a {{ x }} b {{y}} c {{  x  }}", {"x": "1", "y": "2"}) == "a 1 b 2 c 1"
    assert render("no placeholders", {}) == "no placeholders"
    assert render("{{ options.size }}", {"options.size": "10G"}) == "10G"
    assert placeholders("{{ a }}\n{{ b.c }}") == ["a", "b.c"]


def test_unknown_placeholder_is_an_error_with_its_line():
    with pytest.raises(TemplateError, match=r"t.ks:3: unknown placeholder \{\{ nope \}\}"):
        render("one\ntwo {{ x }}\nthree {{ nope }}\n", {"x": "1"}, source="t.ks")


@pytest.mark.parametrize("text", ["{{ x | upper }}", "{{ x() }}", "{{ __import__('os') }}",
                                  "{{ }}", "{{ 1 + 1 }}", "{% if x %}{{ x }}", "{{ x",
                                  "{{ a.b. }}"])
def test_anything_but_a_name_is_refused(text):
    with pytest.raises(TemplateError):
        render(text, {"x": "1", "a": "2"})


def test_values_are_not_re_rendered():
    # a value that looks like a placeholder is placed as-is, once
    assert render("{{ a }}", {"a": "{{ b }}", "b": "boom"}) == "{{ b }}"


def test_check_hook_validates_each_value():
    def check(name, value):
        if "\n" in value:
            raise ValueError("newline")
        return value

    with pytest.raises(TemplateError, match="cannot place x: newline"):
        render("{{ x }}", {"x": "a\nb"}, check=check)


# -- template values --------------------------------------------------------------------

@pytest.mark.parametrize("field, bad", [
    ("hostname", "web7;reboot"), ("hostname", "web7\nx"), ("hostname", "Web7"),
    ("address", "10.0.0.1; rm"), ("address", "300.0.0.1"),
    ("mac", "52-54-00-12-34-56"), ("mac", "x"),
    ("deployment", "deb'ian"), ("deployment", "a b"),
    ("token", "12.ABC"), ("token", "12.a$b"),
    ("callhome_url", "http://10.0.0.1:80/a?b=$(x)"), ("template_url", "https://x/"),
    ("authorized_keys", ("ssh-ed25519 AAAA it's mine",)),
    ("authorized_keys", ("ssh-ed25519 AAAA a\\nb",)),
    ("authorized_keys", ("ssh-ed25519 AAAA\nroot",)),
    ("authorized_keys", ("ssh-ed25519 AAAA `id`",)),
])
def test_values_that_could_escape_are_refused(field, bad):
    with pytest.raises(ValueError):
        values(**{field: bad})


def test_keys_are_joined_per_kind():
    assert values("preseed").as_dict()["authorized_keys"] == f"{KEY1}\\n{KEY2}"
    assert values("kickstart").as_dict()["authorized_keys"] == f"{KEY1}\n{KEY2}"
    cloud = values("cloud-init").as_dict()["authorized_keys"]
    assert json.loads(cloud) == [KEY1, KEY2]
    assert yaml.safe_load(f"ssh_authorized_keys: {cloud}") == {
        "ssh_authorized_keys": [KEY1, KEY2]}


def test_the_profile_templates_render_completely():
    for name, kind in (("debian12.preseed", "preseed"), ("rocky9.ks", "kickstart")):
        text = (TEMPLATES / name).read_text()
        out = render_deployment(kind, text, values(kind), source=name)
        assert "{{" not in out and "}}" not in out
        assert "web7" in out and "12.abcdef234567" in out
        assert "http://10.77.0.1:8080/api/callhome" in out
    preseed = render_deployment("preseed", (TEMPLATES / "debian12.preseed").read_text(),
                                values("preseed"))
    assert f"printf '%b\\n' '{KEY1}\\n{KEY2}' > /target/root/.ssh/authorized_keys" in preseed


def test_cloud_init_template():
    text = "#cloud-config\nhostname: {{ hostname }}\nssh_authorized_keys: {{ authorized_keys }}\n"
    doc = yaml.safe_load(render_deployment("cloud-init", text, values("cloud-init")))
    assert doc == {"hostname": "web7", "ssh_authorized_keys": [KEY1, KEY2]}


def test_script_kind_gets_ipxe_checks():
    ok = render_deployment("script", "#!ipxe\necho {{ hostname }}\n", values("script"))
    assert ok == "#!ipxe\necho web7\n"
    with pytest.raises(TemplateError, match="must start with '#!ipxe'"):
        render_deployment("script", "echo {{ hostname }}\n", values("script"))
    # keys have spaces and quotes: not placeable in an iPXE script
    with pytest.raises(TemplateError, match="cannot place authorized_keys"):
        render_deployment("script", "#!ipxe\necho {{ authorized_keys }}\n", values("script"))
