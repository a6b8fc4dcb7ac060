"""The operator's iPXE menus and subscripts (fleet.boot.menus): checked at profile
load with FILE:LINE, rendered per machine without injection, served over real
HTTP (aiohttp on 127.0.0.1, httpx as the client, the engine on SQLite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from fleet.boot import menus
from fleet.boot.files import BootFiles
from fleet.boot.http import HttpService
from fleet.core.templates import TemplateError, check_menu
from fleet.core.model import MachineState
from fleet.engine import Engine
from fleet.profile import load_profile

MAC = "52:54:00:12:34:56"

MENU = """\
#!ipxe
menu fleet: {{ deployment }} on {{ hostname }} ({{ arch }})
item install Install {{ deployment }}
item local Boot the local disk
item rescue Rescue shell
item shell iPXE shell
choose --default install --timeout 3000 target || goto install
goto ${target}
:install
chain {{ sub_url }}/install.ipxe
:local
chain {{ sub_url }}/local.ipxe
:rescue
chain {{ sub_url }}/rescue.ipxe
:shell
shell
"""
RESCUE = "#!ipxe\necho rescue for {{ hostname }} {{ mac }} at {{ address }}\nchain {{ script_url }}\n"

PROFILE = """\
version: 1
name: menus
store: ./menus.db
sites:
  - name: lab
    distributor:
      address: 127.0.0.1
      ports: {dhcp: 6767, pxe: 14011, tftp: 6969, http: 8067}
      ipxe:
        menu: site-menu.ipxe
deployments:
  - name: debian12
    kind: preseed
    kernel: http://127.0.0.1:8067/files/linux
    cmdline: "auto=true"
    ipxe:
      menu: menu.ipxe
      subscripts: {rescue: rescue.ipxe}
  - name: plain
    kind: preseed
    kernel: http://127.0.0.1:8067/files/linux
"""


def write(folder: Path, profile: str = PROFILE, menu: str = MENU, rescue: str = RESCUE) -> Path:
    (folder / "menu.ipxe").write_text(menu)
    (folder / "rescue.ipxe").write_text(rescue)
    (folder / "site-menu.ipxe").write_text("#!ipxe\necho site menu for {{ hostname }}\n"
                                           "chain {{ sub_url }}/install.ipxe\n")
    path = folder / "menus.yaml"
    path.write_text(profile)
    return path


def values(**over):
    v = dict(mac=MAC, hostname="web7", address="10.91.0.50", arch="bios",
             deployment="debian12", base_url="http://10.77.0.1:8080")
    v.update(over)
    return menus.values(**v)


# -- rendering --------------------------------------------------------------------------

def test_render_places_the_machines_values():
    text = menus.render_script(MENU + RESCUE[7:], values(), "menu.ipxe")
    assert "menu fleet: debian12 on web7 (bios)" in text
    assert f"chain http://10.77.0.1:8080/boot/{MAC}/sub/install.ipxe" in text
    assert f"chain http://10.77.0.1:8080/boot/{MAC}.ipxe" in text
    assert "at 10.91.0.50" in text
    assert "${target}" in text  # the operator's own iPXE syntax is left alone
    # no lease address: empty, not an error
    assert "at \n" in menus.render_script(RESCUE, values(address=""), "rescue.ipxe")


@pytest.mark.parametrize("hostname", [
    "web7\nshell", "web7;shell", "web7 || shell", "${net0/ip}", "web7#x", "web7\rshell",
    "we'b", 'we"b', "web7&&shell", "web`7`", "",
])
def test_values_that_could_add_ipxe_commands_are_refused(hostname):
    with pytest.raises(TemplateError) as err:
        menus.render_script(MENU, values(hostname=hostname), "menu.ipxe")
    assert "menu.ipxe:2: cannot place hostname" in str(err.value)


def test_a_deployment_name_with_a_newline_cannot_reach_the_script():
    with pytest.raises(TemplateError):
        menus.render_script(MENU, values(deployment="d\nkernel http://evil/x"), "m")


def test_check_reports_template_lines():
    bad = ("#!ipxe\necho {{ hostnme }}\nchain {{ sub_url }}/nothere.ipxe\n"
           "{% if x %}\nchain {{ sub_url }}/rescue.ipxe\necho {{ a | b }}\n")
    assert check_menu(bad, ["rescue"]) == [
        (2, "unknown placeholder {{ hostnme }} (known: address, arch, base_url, deployment, "
            "hostname, mac, script_url, sub_url)"),
        (3, "chains subscript 'nothere', which is not declared (declared: install, local, "
            "rescue)"),
        (4, "'{% if': template statements are not supported (only {{ name }} placeholders)"),
        (6, "not a placeholder: '{{ a | b }}' (only {{ name }} is supported: no expressions "
            "or filters)"),
    ]
    assert check_menu("echo hi\n", []) == [(1, "an iPXE script must start with '#!ipxe'")]
    assert check_menu(MENU, ["rescue"]) == []


# -- profile load --------------------------------------------------------------------------

def test_profile_loads_the_menu_keys(tmp_path):
    profile = load_profile(write(tmp_path))
    d = profile.deployment("debian12")
    assert d.ipxe.menu == tmp_path / "menu.ipxe"
    assert dict(d.ipxe.subscripts) == {"rescue": tmp_path / "rescue.ipxe"}
    assert profile.site("lab").distributor.ipxe.menu == tmp_path / "site-menu.ipxe"
    assert profile.deployment("plain").ipxe is None


@pytest.mark.parametrize("menu,rescue,profile_edit,expected", [
    (MENU.replace("{{ hostname }}", "{{ hostnam }}"), RESCUE, None,
     "menu.ipxe:2: deployments[0].ipxe.menu: unknown placeholder {{ hostnam }}"),
    (MENU, RESCUE.replace("{{ mac }}", "{{ token }}"), None,
     "rescue.ipxe:2: deployments[0].ipxe.subscripts.rescue: unknown placeholder {{ token }}"),
    (MENU.replace("rescue.ipxe", "resuce.ipxe"), RESCUE, None,
     "menu.ipxe:14: deployments[0].ipxe.menu: chains subscript 'resuce', which is not declared"),
    (MENU, RESCUE, ("rescue: rescue.ipxe", "rescue: missing.ipxe"),
     "menus.yaml:18: deployments[0].ipxe.subscripts.rescue: file not found"),
    (MENU, RESCUE, ("menu: menu.ipxe", "menu: nope.ipxe"),
     "menus.yaml:17: deployments[0].ipxe.menu: file not found"),
    (MENU, RESCUE, ("{rescue: rescue.ipxe}", "{install: rescue.ipxe}"),
     "menus.yaml:18: deployments[0].ipxe.subscripts.install: 'install' is a built-in subscript"),
], ids=["menu-placeholder", "subscript-placeholder", "undeclared-subscript", "missing-subscript",
        "missing-menu", "builtin-name"])
def test_profile_check_names_the_template_file_and_line(tmp_path, xdg, menu, rescue,
                                                        profile_edit, expected):
    text = PROFILE if profile_edit is None else PROFILE.replace(*profile_edit)
    path = write(tmp_path, text, menu, rescue)
    cp = subprocess.run([sys.executable, "-m", "fleet", "--headless", "profile", "check",
                         str(path)], env=xdg, capture_output=True, text=True, timeout=60,
                        cwd=tmp_path)
    assert cp.returncode == 2, cp.stdout + cp.stderr
    assert expected in cp.stderr, cp.stderr
    assert "Traceback" not in cp.stderr


# -- served over HTTP ------------------------------------------------------------------------

@pytest.fixture
async def served(tmp_path, xdg):
    engine = await Engine.open(write(tmp_path))
    http = HttpService(engine, "lab", BootFiles(engine.profile, "lab", system_dirs=()))
    await http.start("127.0.0.1", 0)
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}", timeout=10)
    yield engine, http, client
    await client.aclose()
    await http.stop()
    await engine.close()


async def _leased(engine, client, deployment="debian12", hostname="web7"):
    assert (await client.get(f"/boot/{MAC}.ipxe")).status_code == 200
    await engine.flush_sightings()
    await engine.lease(MAC, deployment, hostname, "10.91.0.50")


async def test_menu_and_subscripts_are_served_per_machine(served):
    engine, http, client = served
    # not leased: the built-in hold loop, and no subscripts
    r = await client.get(f"/boot/{MAC}.ipxe")
    assert "fleet: waiting to be leased" in r.text
    assert (await client.get(f"/boot/{MAC}/sub/rescue.ipxe")).status_code == 404

    await _leased(engine, client)
    base = f"http://127.0.0.1:{http.port}"
    r = await client.get(f"/boot/{MAC}.ipxe")
    assert r.status_code == 200 and r.text.startswith("#!ipxe\nmenu fleet: debian12 on web7")
    assert f"chain {base}/boot/{MAC}/sub/install.ipxe" in r.text
    # the menu is not the install: nothing started yet
    assert (await engine.machine(MAC)).state is MachineState.LEASED

    r = await client.get(f"/boot/{MAC}/sub/rescue.ipxe")
    assert r.text == f"#!ipxe\necho rescue for web7 {MAC} at 10.91.0.50\nchain {base}/boot/{MAC}.ipxe\n"
    r = await client.get(f"/boot/{MAC}/sub/local.ipxe")
    assert "sanboot" in r.text
    assert (await engine.machine(MAC)).state is MachineState.LEASED
    # the built-in install subscript is the install script, and starts the install
    r = await client.get(f"/boot/{MAC}/sub/install.ipxe")
    assert "fleet: installing debian12 as web7" in r.text
    assert "kernel --name kernel http://127.0.0.1:8067/files/linux" in r.text
    assert (await engine.machine(MAC)).state is MachineState.PROVISIONING
    fetched = [e.data["subscript"] for e in await engine.events(100, subject=MAC)
               if e.kind == "boot.subscript"]
    assert sorted(fetched) == ["install", "local", "rescue"]

    for bad in ("nothere.ipxe", "rescue", "../menu.ipxe", "rescue.ipxe.bak"):
        assert (await client.get(f"/boot/{MAC}/sub/{bad}")).status_code == 404
    assert (await client.get("/boot/not-a-mac/sub/rescue.ipxe")).status_code == 400
    assert (await client.head(f"/boot/{MAC}/sub/install.ipxe")).status_code == 405


async def test_site_menu_is_the_default_for_deployments_without_one(served):
    engine, http, client = served
    await _leased(engine, client, deployment="plain", hostname="db1")
    r = await client.get(f"/boot/{MAC}.ipxe")
    assert r.text.startswith("#!ipxe\necho site menu for db1\n")
    # the deployment's subscripts are not the site's
    assert (await client.get(f"/boot/{MAC}/sub/rescue.ipxe")).status_code == 404


async def test_a_bad_value_is_a_500_with_an_event_not_a_script(served, tmp_path):
    """A menu whose (validated) values fail at render time: e.g. the file changed
    after load to use a placeholder fleet does not have."""
    engine, http, client = served
    await _leased(engine, client)
    (tmp_path / "menu.ipxe").write_text("#!ipxe\necho {{ token }}\n")
    r = await client.get(f"/boot/{MAC}.ipxe")
    assert r.status_code == 500 and "#!ipxe" not in r.text
    kinds = [e.kind for e in await engine.events(50, subject=MAC)]
    assert "boot.render_failed" in kinds
