"""The HTTP service of one distributor: boot scripts, templates, call-home, files.

URL scheme (`<base>` is `http://<distributor address>:<port>`):

    GET  /boot/<mac>.ipxe[?uuid=&serial=&manufacturer=&product=&buildarch=&platform=&ipxe=]
                                 the machine's iPXE script, as the policy decides
                                 (MAC as aa:bb:.., aa-bb-.. or aabbccddeeff; a group
                                 or all-zero MAC is a 400: fleet.boot.macs)
    GET  /boot/<mac>/sub/<name>.ipxe
                                 a subscript of the machine's iPXE menu (fleet.boot.menus)
    GET  /templates/<token>      the lease's rendered kickstart/preseed/cloud-init
    POST /api/callhome           {"token", "hostname", "address", "host_keys"} (JSON)
    POST /api/wiped              the wiper's report {"token", "disks", "failed"} (JSON;
                                 fleet.boot.wipe)
    GET  /wiper/<id>/<name>      the wiper's vmlinuz and initrd.gz (fleet.build.wiper)
    GET  /ipxe/<name>            iPXE binaries (BootFiles.resolve)
    GET  /files/<path>           files under the distributor's folders (Range, HEAD)
    GET  /artifacts/<name>       the distributor's assigned artifacts (fleet.boot.assigned)
    GET  /healthz                "ok"
    GET  /metrics                Prometheus metrics of the engine (fleet.boot.metrics)

The routes are thin: the policy (`fleet.boot.policy`) says what a machine
boots, `fleet.boot.scripts` and `fleet.boot.templates` write the text, and
`fleet.boot.callhome` checks tokens and applies lifecycle changes through the
engine. Tokens never reach a log line or an event; request bodies are limited
to 64 KiB; `/boot` and `/templates` refuse HEAD (it would count
as a boot or a report).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncio
import logging
import re
import time
from pathlib import Path
from urllib.parse import parse_qsl

from aiohttp import web

from fleet.boot import callhome, jsonbody, menus, policy, scripts, wipe
from fleet.boot.assigned import AssignedArtifacts
from fleet.boot.macs import machine_mac, why_not_a_machine
from fleet.boot.policy import Action
from fleet.boot.templates import TemplateValues, render_deployment
from fleet.core import lifecycle as lc
from fleet.core.templates import BUILTIN_SUBSCRIPTS, MAX_TEMPLATE_BYTES, TemplateError
from fleet.core.arch import FirmwareArch
from fleet.core.model import Machine, MachineState, Severity
from fleet.core.values import parse_mac
from fleet.errors import BadInput, EnvironmentProblem
from fleet.access import postboot
from fleet.access.keys import authorized_keys_for

if TYPE_CHECKING:
    from fleet.engine import Engine

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
#: what a client that met an environment problem (a full disk) is told to wait
RETRY_AFTER_SECONDS = 30
IPXE_TYPE = "text/plain"
_SECRET_PATH = re.compile(r"^(/templates/)[^/]*")
_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")


class HttpService:
    """aiohttp in-process beside the DHCP/TFTP servers, for one site's distributor."""

    def __init__(self, engine: "Engine", site_name: str, files):
        site = engine.profile.site(site_name)
        if site.distributor is None:
            raise ValueError(f"site {site_name!r} has no distributor")
        self.engine = engine
        self.site = site_name
        self.cfg = site.distributor
        self.files = files
        self.port: int = 0
        self.limiter = callhome.RejectionLimiter()
        self.assigned = AssignedArtifacts(engine, site_name)
        self._runner: web.AppRunner | None = None
        self.app = self._make_app()

    # -- lifecycle ----------------------------------------------------------------

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (0 = any free port). OSError propagates."""
        runner = web.AppRunner(self.app, handle_signals=False, access_log=None,
                               shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]
        await self.assigned.start()
        self.files.assigned = self.assigned  # TFTP resolves them too
        log.info("HTTP for %s on %s:%d", self.site, host, self.port)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        await self.assigned.stop()
        if runner is not None:
            await runner.cleanup()

    def base_url(self) -> str:
        return f"http://{self.cfg.address}:{self.port or self.cfg.ports.http}"

    # -- the app ------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._middleware])
        r = app.router
        r.add_get("/healthz", self.healthz, allow_head=True)
        r.add_get("/metrics", self.metrics, allow_head=False)
        r.add_get("/boot/{name}", self.boot_script, allow_head=False)
        r.add_get("/boot/{mac}/sub/{name}", self.boot_subscript, allow_head=False)
        r.add_get("/templates/{token}", self.template, allow_head=False)
        r.add_post("/api/callhome", self.callhome)
        r.add_post("/api/wiped", self.wiped)
        r.add_get("/wiper/{aid}/{name}", self.wiper_file, allow_head=True)
        r.add_get("/ipxe/{name}", self.ipxe_file, allow_head=True)
        r.add_get("/files/{path:.*}", self.file, allow_head=True)
        r.add_get("/artifacts/{path:.*}", self.artifact_file, allow_head=True)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        started = time.monotonic()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except (asyncio.CancelledError, ConnectionError):
            status = 499
            raise
        except EnvironmentProblem as err:  # a full disk, say: the client may retry later
            log.error("HTTP %s %s: %s", request.method, _loggable(request.path), err)
            status = 503
            return web.Response(status=503, headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                                text="fleet cannot store this now; try again later\n")
        except Exception:
            log.exception("HTTP %s %s failed", request.method, _loggable(request.path))
            status = 500
            return web.Response(status=500, text="internal error\n")
        finally:
            if status != 499:  # the client went away: nothing was answered
                self.engine.boot.metrics.http_answered(self.site, status)
            if log.isEnabledFor(logging.DEBUG):
                keys = ",".join(sorted(request.query)[:10])
                log.debug("HTTP %s %s %s%s -> %d in %.1f ms", request.remote, request.method,
                          _loggable(request.path), f" ?{keys}" if keys else "", status,
                          (time.monotonic() - started) * 1000)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def metrics(self, request: web.Request) -> web.Response:
        from fleet.boot.metrics import CONTENT_TYPE

        body = await self.engine.boot.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE,
                                                "Cache-Control": "no-store"})

    # -- /boot/<mac>.ipxe ------------------------------------------------------------

    async def boot_script(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if not name.endswith(".ipxe"):
            raise web.HTTPNotFound(text="not found\n")
        try:
            mac = parse_mac(name[:-5])
        except ValueError:
            raise web.HTTPBadRequest(text="not a MAC address: write /boot/aa:bb:cc:dd:ee:ff.ipxe\n")
        why = why_not_a_machine(mac)
        if why is not None:
            raise web.HTTPBadRequest(text=f"refused: {why}\n")
        engine = self.engine
        machine = await engine.store.machines.get(mac)
        query = _ipxe_query(request)
        facts = policy.facts_from_query(query)
        if machine is None or machine.arch is FirmwareArch.UNKNOWN:
            info = facts.get("info", {})
            arch = policy.arch_from_ipxe(info.get("platform"), info.get("buildarch"))
            if arch is not FirmwareArch.UNKNOWN:
                facts["arch"] = arch
        engine.record_sighting(mac, stage="ipxe", distributor=self.site,
                               last_ip=request.remote, **facts)
        decision = policy.decide(machine, engine.profile)
        log.debug("boot %s: %s (%s)", mac, decision.action.value, decision.reason)
        try:
            menu = self._menu_of(decision)
            if menu is not None:  # the operator's menu; its `install` item starts the install
                text = await self._render_menu(machine, decision, menu.menu)
            elif decision.installs:
                text = await self._install(machine, decision)
            elif decision.action is Action.LOCAL:
                text = scripts.local_boot_script()
            elif decision.action is Action.WIPE:
                text = await self._wiper(machine)
            else:
                text = self._hold(reported=bool(query))
        except (TemplateError, scripts.UnsafeValue, OSError, ValueError) as err:
            return await self._render_failed(mac, "boot script", err)
        return _ipxe(text)

    # -- /boot/<mac>/sub/<name>.ipxe: the menu's subscripts -----------------------------

    async def boot_subscript(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        sub = name[:-5] if name.endswith(".ipxe") else ""
        try:
            mac = machine_mac(request.match_info["mac"])
        except ValueError as err:
            raise web.HTTPBadRequest(text=f"refused: {err}\n")
        machine = await self.engine.store.machines.get(mac)
        decision = policy.decide(machine, self.engine.profile)
        menu = self._menu_of(decision)
        if menu is None or sub not in (*BUILTIN_SUBSCRIPTS, *menu.subscripts):
            raise web.HTTPNotFound(text="no such subscript for this machine now\n")
        try:
            if sub == "install":
                text = await self._install(machine, decision)
            elif sub == "local":
                text = scripts.local_boot_script()
            else:
                text = await self._render_menu(machine, decision, menu.subscripts[sub])
        except (TemplateError, scripts.UnsafeValue, OSError, ValueError) as err:
            return await self._render_failed(mac, f"subscript {sub}", err)
        log.info("boot %s: subscript %s", mac, sub)
        if self.limiter.allow(f"sub:{mac}"):  # a menu in a loop must not flood the log
            await self.engine.record(self.engine.event(
                "boot.subscript", mac, f"{mac} fetched iPXE subscript {sub}", subscript=sub,
                deployment=decision.deployment.name))
        return _ipxe(text)

    def _menu_of(self, decision: policy.Decision):
        """The operator's iPXE menu for an installing machine (its deployment's, else
        the distributor's), or None: the built-in scripts."""
        if not decision.installs:
            return None
        return decision.deployment.ipxe or self.cfg.ipxe

    async def _render_menu(self, machine: Machine, decision: policy.Decision,
                           path: Path) -> str:
        lease = machine.lease
        values = menus.values(mac=machine.mac, hostname=lease.hostname,
                              address=lease.address or "", arch=machine.arch.value,
                              deployment=decision.deployment.name, base_url=self.base_url())
        raw = await asyncio.to_thread(_read_limited, Path(path))
        return menus.render_script(raw.decode("utf-8"), values, source=Path(path).name)

    def _hold(self, reported: bool) -> str:
        return scripts.hold_script(self.base_url(), self.cfg.poll_seconds, self.cfg.hold,
                                   reported=reported)

    async def _install(self, machine: Machine, decision: policy.Decision) -> str:
        deployment = decision.deployment
        values = await self._template_values(machine)
        if decision.action is Action.SCRIPT:
            text = await self._render_template(deployment, values)
        else:
            cmdline = scripts.render_cmdline(deployment.cmdline, values.as_dict(),
                                             source=f"deployment {deployment.name} cmdline")
            text = scripts.install_script(kernel=deployment.kernel, initrd=deployment.initrd,
                                          cmdline=cmdline, deployment=deployment.name,
                                          hostname=machine.lease.hostname)
        if not await self._started(machine):
            return self._hold(reported=True)
        return text

    async def _started(self, machine: Machine) -> bool:
        """Serving the install (script or template) means the install started.
        False when the machine changed meanwhile (released): serve no install then."""
        if machine.state in (MachineState.LEASED, MachineState.STALLED):
            try:
                await self.engine.advance(machine.mac, lc.InstallStarted())
            except BadInput as err:
                log.info("install of %s not started: %s", machine.mac, err)
                return False
        return True

    async def _template_values(self, machine: Machine) -> TemplateValues:
        lease = machine.lease
        deployment = self.engine.profile.deployment(lease.deployment)
        base = self.base_url()
        return TemplateValues(
            hostname=lease.hostname, address=lease.address or "", mac=machine.mac,
            deployment=deployment.name, kind=deployment.kind,
            token=self.engine.callhome_token(machine),
            callhome_url=f"{base}/api/callhome",
            template_url=f"{base}/templates/{callhome.template_token(self.engine, machine)}",
            # the deployment's keys plus fleet's operator key, so fleet can log in
            authorized_keys=tuple(await authorized_keys_for(self.engine, deployment.name)))

    async def _render_template(self, deployment, values: TemplateValues) -> str:
        path = Path(deployment.template)
        if not path.is_absolute():
            path = Path(self.engine.profile.path).parent / path
        raw = await asyncio.to_thread(_read_limited, path)
        text = raw.decode("utf-8")
        return render_deployment(deployment.kind, text, values, source=path.name)

    async def _render_failed(self, subject: str, what: str, err: Exception) -> web.Response:
        message = f"cannot render the {what} for {subject}: {err}"
        log.warning("%s", message)
        if self.limiter.allow(f"render:{subject}"):  # a polling machine retries often
            await self.engine.record(self.engine.event(
                "boot.render_failed", subject, message, severity=Severity.ERROR, what=what,
                error=str(err)))
        return web.Response(status=500, text=f"fleet: {what} could not be rendered; "
                                             f"see the event log\n")

    # -- /templates/<token> -------------------------------------------------------------

    async def template(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        try:
            machine = await callhome.machine_for_template(self.engine, token)
        except callhome.CallhomeError as err:
            subject = await callhome.subject_of(self.engine, err.lease_id)
            await callhome.record_rejection(self.engine, "template.rejected", err,
                                            request.remote or "?", subject,
                                            what="template fetch", limiter=self.limiter)
            raise web.HTTPForbidden(text=f"refused: {err.reason}\n")
        try:
            deployment = self.engine.profile.deployment(machine.lease.deployment)
        except KeyError:
            deployment = None
        if deployment is None or deployment.template is None:
            raise web.HTTPNotFound(text="this lease's deployment has no template\n")
        try:
            text = await self._render_template(deployment, await self._template_values(machine))
        except (TemplateError, OSError, ValueError) as err:
            return await self._render_failed(machine.mac, "template", err)
        if not await self._started(machine):
            raise web.HTTPForbidden(text="refused: the machine changed state\n")
        return web.Response(text=text, content_type="text/plain",
                            headers={"Cache-Control": "no-store"})

    # -- /api/callhome -----------------------------------------------------------------

    async def callhome(self, request: web.Request) -> web.Response:
        peer = request.remote or "?"
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY,
                                                actual_size=request.content_length,
                                                text=f"body larger than {MAX_BODY} bytes\n")
        if request.content_type != "application/json":
            err = callhome.InvalidRequest("Content-Type must be application/json")
            await callhome.record_rejection(self.engine, "callhome.invalid", err, peer,
                                            what="call-home", limiter=self.limiter)
            raise web.HTTPUnsupportedMediaType(text=f"{err.reason}\n")
        body = await request.read()  # HTTPRequestEntityTooLarge past client_max_size
        try:
            payload = jsonbody.parse_body(body)
        except jsonbody.BadJson as bad:
            err = callhome.InvalidRequest(str(bad))
            await callhome.record_rejection(self.engine, "callhome.invalid", err, peer,
                                            what="call-home", limiter=self.limiter)
            raise web.HTTPBadRequest(text=f"{err.reason}\n")
        try:
            node = await callhome.register_callhome(self.engine, payload, peer, site=self.site,
                                                    limiter=self.limiter)
        except callhome.CallhomeError as err:
            cls = {403: web.HTTPForbidden, 409: web.HTTPConflict}.get(err.status,
                                                                   web.HTTPBadRequest)
            raise cls(text=f"refused: {err.reason}\n")
        await self._post_boot(node)
        return web.json_response({
            "node": node.name,
            "address": node.address,
            "host_keys": [{"type": k.key_type, "fingerprint": k.fingerprint}
                          for k in node.host_keys],
        })

    async def _post_boot(self, node) -> None:
        """Queue the deployment's post-boot scripts as a job of this process (it runs
        after this answer; the node is registered either way)."""
        try:
            await postboot.schedule(self.engine, node, node.labels.get("deployment", ""))
        except Exception:
            log.exception("scheduling the post-boot scripts of %s", node.name)

    # -- the wipe: /boot's wiper script, /wiper/<id>/<name>, POST /api/wiped -----------------

    async def _wiper(self, machine: Machine) -> str:
        base = self.base_url()
        image = await wipe.current_wiper(self.engine, self.site)
        if image is None:
            await wipe.record_no_image(self.engine, machine, self.site)
            return scripts.wiper_missing_script(base, self.cfg.poll_seconds)
        prefix = f"{base}/wiper/{image.id[:wipe.ID_PREFIX]}"
        return scripts.wiper_script(
            kernel_url=f"{prefix}/vmlinuz", initrd_url=f"{prefix}/initrd.gz",
            report_url=f"{base}/api/wiped", token=wipe.wipe_token(self.engine, machine),
            base_url=base, retry_seconds=self.cfg.poll_seconds, label=image.id[:12])

    async def wiper_file(self, request: web.Request) -> web.StreamResponse:
        path = await wipe.wiper_file(self.engine, request.match_info["aid"],
                                     request.match_info["name"])
        if path is None or not path.is_file():
            raise web.HTTPNotFound(text="not found\n")
        return web.FileResponse(path, chunk_size=256 * 1024)

    async def wiped(self, request: web.Request) -> web.Response:
        peer = request.remote or "?"
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="Content-Type must be application/json\n")
        body = await request.read()  # HTTPRequestEntityTooLarge past client_max_size
        try:
            payload = jsonbody.parse_body(body)
        except jsonbody.BadJson:
            payload = None  # parse_report refuses it (400, with an event)
        try:
            machine = await wipe.report_wiped(self.engine, payload, peer, limiter=self.limiter)
        except wipe.WipeRefused as err:
            cls = web.HTTPBadRequest if err.status == 400 else web.HTTPForbidden
            raise cls(text=f"refused: {err.reason}\n")
        log.info("wipe of %s reported", machine.mac)
        return web.json_response({"mac": machine.mac, "state": machine.state.value})

    # -- files ---------------------------------------------------------------------------

    async def ipxe_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not _SAFE_NAME.fullmatch(name) or name in (".", ".."):
            raise web.HTTPNotFound(text="not found\n")
        return self._serve(name)

    async def file(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        parts = path.split("/")
        if (not path or len(path) > 1024 or any(p in ("", ".", "..") for p in parts)
                or any(c in path for c in "\\\x00") or not path.isprintable()):
            raise web.HTTPNotFound(text="not found\n")
        return self._serve(path)

    async def artifact_file(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        if not path or len(path) > 512 or not path.isprintable():
            raise web.HTTPNotFound(text="not found\n")
        resolved = self.assigned.find(path)
        if resolved is None:
            raise web.HTTPNotFound(text="not found\n")
        return web.FileResponse(resolved, chunk_size=256 * 1024)

    def _serve(self, name: str) -> web.StreamResponse:
        resolved = self.files.resolve(name)
        if resolved is None or not Path(resolved).is_file():
            raise web.HTTPNotFound(text="not found\n")
        return web.FileResponse(resolved, chunk_size=256 * 1024)


def _ipxe(text: str) -> web.Response:
    return web.Response(text=text, content_type=IPXE_TYPE, headers={"Cache-Control": "no-store"})


def _ipxe_query(request: web.Request) -> dict[str, str]:
    """The query as iPXE wrote it: `:uristring` encodes a space as %20 and leaves '+'
    as is, so '+' is a literal plus here (not a form-encoded space). First value wins;
    at most 32 fields are looked at."""
    raw = request.rel_url.raw_query_string
    if not raw:
        return {}
    out: dict[str, str] = {}
    for key, value in parse_qsl(raw.replace("+", "%2B"), keep_blank_values=True,
                                max_num_fields=None)[:32]:
        out.setdefault(key, value)
    return out


def _read_limited(path: Path) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(MAX_TEMPLATE_BYTES + 1)
    if len(data) > MAX_TEMPLATE_BYTES:
        raise ValueError(f"template {path.name} is larger than {MAX_TEMPLATE_BYTES} bytes")
    return data


def _loggable(path: str) -> str:
    """The request path with tokens replaced: safe for logs."""
    return _SECRET_PATH.sub(lambda m: m.group(1) + "<token>", path)[:200]
