"""iPXE mainscripts (menus) and subscripts written by the operator, rendered per machine.

A deployment (or a site's distributor, for every deployment without one) may
declare

    ipxe:
      menu: templates/menu.ipxe          # what /boot/<mac>.ipxe serves while installing
      subscripts:
        rescue: templates/rescue.ipxe    # served at /boot/<mac>/sub/rescue.ipxe

While the policy says "install", `/boot/<mac>.ipxe` serves the rendered menu
instead of the built-in install script; the menu chains subscripts with
`chain {{ sub_url }}/<name>.ipxe`. Two subscripts are built in: `install` (the
built-in install script, or the kind-script template; fetching it starts the
install, as the plain install script does) and `local` (boot the local disk).
Anything else the machine does is up to the operator's text (`shell`, `exit`...).

Placeholders (`{{ name }}`, fleet.boot.templates): mac, hostname, address, arch,
deployment, base_url, script_url (this machine's /boot/<mac>.ipxe), sub_url
(its /boot/<mac>/sub). Every value passes `fleet.boot.scripts.ipxe_value`
(no newline, `;`, `#`, `$`, quotes, spaces...), so a host name cannot add a
line or a command to the script; `address` may be empty (lease without one).
No tokens are placed: a menu is fetched before anything proves who asks.

The grammar is fleet.core.templates: the names above (MENU_VARIABLES,
BUILTIN_SUBSCRIPTS) and `check_menu`, which finds, at profile load, what
rendering would refuse (unknown placeholders, template statements, a missing
`#!ipxe`) and chains to subscripts nobody declared, each with the template's line.
"""

from __future__ import annotations

from typing import Mapping

from fleet.boot.scripts import check_script, ipxe_value
from fleet.boot.templates import render


def values(*, mac: str, hostname: str, address: str, arch: str, deployment: str,
           base_url: str) -> dict[str, str]:
    """The placeholders of one machine's menu and subscripts."""
    return {"mac": mac, "hostname": hostname, "address": address or "", "arch": arch,
            "deployment": deployment, "base_url": base_url,
            "script_url": f"{base_url}/boot/{mac}.ipxe", "sub_url": f"{base_url}/boot/{mac}/sub"}


def _place(name: str, value: str) -> str:
    if name == "address" and value == "":
        return value
    return ipxe_value(name, value)


def render_script(text: str, machine_values: Mapping[str, str], source: str) -> str:
    """A menu or subscript for one machine (TemplateError if anything is refused)."""
    rendered = render(text, machine_values, check=_place, source=source)
    check_script(rendered, source)
    return rendered
