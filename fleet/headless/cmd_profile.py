"""`profile new NAME [--from lab|demo]`: a starter profile in the user's
profiles folder (fleet.profile.starter), ready for `profile check NAME`."""

from __future__ import annotations

from fleet.headless.output import Output
from fleet.profile.starter import new_profile


def new(args, out: Output) -> int:
    written = new_profile(args.name, args.source)
    folder = written.path.parent
    copied = ", ".join(p.name for p in written.templates) or "none"
    kept = (f"; kept the templates already there ({', '.join(p.name for p in written.kept)})"
            if written.kept else "")
    text = (f"wrote {written.path} (from {written.source.name}) and its templates into "
            f"{folder / 'templates'} ({copied}){kept}\n"
            f"edit it, then: fleet --headless profile check {args.name}")
    out.record({"file": str(written.path), "from": str(written.source),
                "templates": [str(p) for p in written.templates],
                "kept": [str(p) for p in written.kept]}, text)
    return 0
