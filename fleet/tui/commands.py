"""Command palette (ctrl+p): find any node, MAC or job in the panes; switch theme."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


class FleetCommands(Provider):
    def _entries(self):
        app = self.app
        for kind, label in (("machines", "machine"), ("nodes", "node"), ("jobs", "job")):
            pane = app.pane(kind)
            if pane is None:
                continue
            for key, row in list(pane.table.rows.items()):
                text = f"{label} {key}"
                extra = " ".join(str(v) for v in row.values[1:4] if v not in (None, ""))
                yield text, extra, partial(app.show_record, kind, key)
        for name in sorted(app.available_themes):
            yield f"theme {name}", "switch the console theme", partial(app.set_theme, name)
        for kind in ("machines", "nodes", "jobs", "distributors", "events"):
            yield f"pane {kind}", "focus and zoom", partial(app.run_command, kind)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        count = 0
        for text, help_text, callback in self._entries():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback, help=help_text)
                count += 1
                if count >= 200:
                    return

    async def discover(self) -> Hits:
        app = self.app
        for kind in ("machines", "nodes", "jobs", "distributors", "events"):
            yield DiscoveryHit(f"pane {kind}", partial(app.run_command, kind),
                               help="focus and zoom")
        for name in ("fleet-dark", "fleet-light", "high-contrast", "k9s"):
            yield DiscoveryHit(f"theme {name}", partial(app.set_theme, name))
