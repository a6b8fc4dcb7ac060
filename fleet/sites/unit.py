"""The systemd unit that keeps a site's `fleet --headless serve --site SITE`
running on its host (the profile describes every site; `--site` makes the host
serve its own), a user unit for an ordinary account, a system unit for root."""

from __future__ import annotations

import shlex


def unit_name(site: str) -> str:
    return f"fleet-site-{site}.service"


def unit_path(site: str, home: str, root: bool) -> str:
    if root:
        return f"/etc/systemd/system/{unit_name(site)}"
    return f"{home}/.config/systemd/user/{unit_name(site)}"


def serve_argv(venv: str, profile: str, site: str) -> list[str]:
    return [f"{venv}/bin/fleet", "--headless", "--profile", profile, "serve", "--site", site]


def serve_command(venv: str, profile: str, site: str) -> str:
    return shlex.join(serve_argv(venv, profile, site))


def unit_text(site: str, venv: str, profile: str, root: bool) -> str:
    # systemd splits ExecStart like a shell (quotes, no expansion): shlex.join fits;
    # a % is a specifier there, so it is doubled
    exec_start = serve_command(venv, profile, site).replace("%", "%%")
    return (f"[Unit]\n"
            f"Description=fleet site {site}: boot services and the site's store\n"
            f"After=network-online.target\nWants=network-online.target\n\n"
            f"[Service]\n"
            f"ExecStart={exec_start}\n"
            f"Restart=on-failure\nRestartSec=5\n\n"
            f"[Install]\n"
            f"WantedBy={'multi-user.target' if root else 'default.target'}\n")
