"""The headless face never imports Textual: checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_headless_command_does_not_import_textual(profile_path, xdg):
    code = textwrap.dedent(f"""
        import sys, io, contextlib
        from fleet.cli import main
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["--headless", "--profile", {str(profile_path)!r}, "--format", "json",
                       "machines"])
        assert rc == 0, rc
        assert buf.getvalue().strip().startswith("["), buf.getvalue()
        loaded = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
        print(loaded)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=xdg, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_no_module_outside_tui_imports_textual():
    """Import every fleet module except fleet.tui.*, then look at sys.modules."""
    code = textwrap.dedent("""
        import importlib, pkgutil, sys, json
        import fleet
        names = []

        def walk(path, prefix):
            # by hand: pkgutil.walk_packages imports every package to recurse,
            # fleet.tui's subpackages included
            for info in pkgutil.iter_modules(path, prefix):
                if info.name.startswith("fleet.tui") or info.name.endswith("__main__"):
                    continue
                module = importlib.import_module(info.name)
                names.append(info.name)
                if info.ispkg:
                    walk(module.__path__, info.name + ".")

        walk(fleet.__path__, "fleet.")
        loaded = [m for m in sys.modules if m == "textual" or m.startswith("textual.")]
        print(json.dumps({"imported": names, "textual": loaded}))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "fleet.engine" in report["imported"] and "fleet.headless.main" in report["imported"]
    assert report["textual"] == []
