"""Rendering kickstart, preseed, cloud-init and iPXE-script templates.

The grammar (what a placeholder is, what is refused) is fleet.core.templates.
The renderer is deliberately tiny: `{{ name }}` is replaced by a value and that
is all. No expressions, filters, loops or evaluation, so a template can never
run code, and a placeholder fleet does not know is an error (`TemplateError`,
with the line), never an empty string that an installer would silently use.
Dotted names (`{{ options.x }}`) are allowed by the syntax and resolve only if
the caller put that exact key in the values.

Escaping: instead of quoting each value for the language around it (shell in a
`%post`, a debconf value, YAML, iPXE), every value is *validated* before it is
placed, so it cannot contain a metacharacter of any of those languages:

| value            | what passes                                                  |
|------------------|--------------------------------------------------------------|
| hostname         | RFC 1123 (letters, digits, '-', '.')                         |
| address          | a dotted-quad IPv4 address, or empty when the lease has none |
| mac              | aa:bb:cc:dd:ee:ff                                            |
| deployment       | letters, digits, '.', '_', '-'                               |
| token            | [a-z0-9.]                                                    |
| *_url            | http://<IPv4>:<port>/ followed by [A-Za-z0-9./_-]            |
| authorized_keys  | printable ASCII keys without ' \\ or `, joined per kind      |

`authorized_keys` is the one value with spaces (and possibly `"` in key
options); the joins are: preseed a literal backslash-n (the template writes it
with `printf '%b'` inside single quotes, which is why ' and \\ are refused),
kickstart and script a newline (kickstart puts it in a quoted heredoc), and
cloud-init a JSON list (valid YAML flow sequence: `ssh_authorized_keys:
{{ authorized_keys }}`). A value that fails its check is a render error, not
an escaped surprise.

A literal `{{` that is not a placeholder cannot be written (there is no escape
syntax); none of the installer languages needs it. Jinja statements
(`{% if ... %}`) are refused with the line, so a template written for another
tool fails loudly instead of reaching an installer half-rendered.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable, Mapping

from fleet.core.templates import (BRACES, JINJA_STATEMENT, TemplateError, line_of,
                                  placeholder_name)
from fleet.core.values import check_hostname, check_ipv4, parse_mac

_TOKEN = re.compile(r"[a-z0-9.]{1,100}")
_DEPLOYMENT = re.compile(r"[A-Za-z0-9._-]{1,100}")
_URL = re.compile(r"http://\d{1,3}(\.\d{1,3}){3}:\d{1,5}/[A-Za-z0-9./_-]*")


def render(text: str, values: Mapping[str, str], *,
           check: Callable[[str, str], str] | None = None, source: str = "template") -> str:
    """Replace every `{{ name }}` in `text` by `values[name]`.

    `check(name, value)` may validate (raising ValueError) or transform each value
    before it is placed. Unknown names and malformed placeholders raise
    TemplateError naming `source` and the line.
    """
    statement = JINJA_STATEMENT.search(text)
    if statement:
        raise TemplateError(
            f"{source}:{line_of(text, statement.start())}: {statement.group(0)!r}: template "
            f"statements are not supported (only {{{{ name }}}} placeholders)")
    out: list[str] = []
    pos = 0
    for match in BRACES.finditer(text):
        name = placeholder_name(text, match, source)
        if name not in values:
            known = ", ".join(sorted(values)) or "none"
            raise TemplateError(
                f"{source}:{line_of(text, match.start())}: unknown placeholder {{{{ {name} }}}} "
                f"(known: {known})")
        value = values[name]
        if check is not None:
            try:
                value = check(name, value)
            except ValueError as err:
                raise TemplateError(
                    f"{source}:{line_of(text, match.start())}: cannot place {name}: {err}") from None
        out.append(text[pos:match.start()])
        out.append(value)
        pos = match.end()
    rest = text[pos:]
    if "{{" in rest:
        raise TemplateError(
            f"{source}:{line_of(text, pos + rest.index('{{'))}: '{{{{' without a closing '}}}}'")
    out.append(rest)
    return "".join(out)


# -- the values an installer template gets ----------------------------------------------

KEY_JOIN = {"preseed": "\\n", "kickstart": "\n", "script": "\n"}


@dataclass(frozen=True)
class TemplateValues:
    """Everything a deployment template may use, validated at construction."""

    hostname: str
    address: str  # "" when the lease has no address
    mac: str
    deployment: str
    kind: str
    token: str
    callhome_url: str
    template_url: str
    authorized_keys: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        check_hostname(self.hostname)
        if self.hostname != self.hostname.lower() or self.hostname != self.hostname.strip():
            raise ValueError(f"hostname not normalised: {self.hostname!r}")
        if self.address and check_ipv4(self.address) != self.address:
            raise ValueError(f"not a plain IPv4 address: {self.address!r}")
        if parse_mac(self.mac) != self.mac:
            raise ValueError(f"MAC not normalised: {self.mac!r}")
        if not _DEPLOYMENT.fullmatch(self.deployment):
            raise ValueError(f"deployment name {self.deployment!r} has characters that "
                             f"cannot be placed safely (letters, digits, '.', '_', '-')")
        if not _TOKEN.fullmatch(self.token):
            raise ValueError("token has unexpected characters")
        for name in ("callhome_url", "template_url"):
            if not _URL.fullmatch(getattr(self, name)):
                raise ValueError(f"{name} has unexpected characters")
        for i, key in enumerate(self.authorized_keys, 1):
            check_key_line(key, i)

    def as_dict(self) -> dict[str, str]:
        values = {
            "hostname": self.hostname,
            "address": self.address,
            "mac": self.mac,
            "deployment": self.deployment,
            "token": self.token,
            "callhome_url": self.callhome_url,
            "template_url": self.template_url,
            "authorized_keys": join_keys(self.kind, self.authorized_keys),
        }
        for key, value in self.extra.items():
            values.setdefault(key, value)
        return values


def check_key_line(key: str, index: int = 1) -> str:
    if not key or not all(" " <= c <= "~" for c in key):
        raise ValueError(f"authorized key {index} has control or non-ASCII characters")
    bad = sorted({c for c in key if c in "'\\`"})
    if bad:
        raise ValueError(f"authorized key {index} contains {' '.join(bad)}, which cannot be "
                         f"placed safely in an installer template")
    return key


def join_keys(kind: str, keys: tuple[str, ...]) -> str:
    if kind == "cloud-init":
        return json.dumps(list(keys))
    return KEY_JOIN.get(kind, "\n").join(keys)


def render_deployment(kind: str, text: str, values: TemplateValues, *,
                      source: str = "template") -> str:
    """Render an installer template for `kind` (script kinds also get the iPXE checks)."""
    if kind == "script":
        from fleet.boot.scripts import ipxe_value, check_script

        rendered = render(text, values.as_dict(), check=ipxe_value, source=source)
        check_script(rendered, source)
        return rendered
    return render(text, values.as_dict(), source=source)
