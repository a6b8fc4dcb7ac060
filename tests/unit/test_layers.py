"""The layers are a contract: import-linter checks the order written in
pyproject.toml ([tool.importlinter]) on every test run, and a back-edge fails it.
The facades the engine is made of register their own job kinds."""

from __future__ import annotations

import pytest

from support.layers import ROOT, copy_of_project, lint
from support.profiles import use_isolated_env, write_profile


def test_the_project_keeps_its_layer_contracts():
    cp = lint(ROOT)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "0 broken" in cp.stdout


@pytest.mark.parametrize("module, line, contract", [
    # the console's records back in a face: the console would import headless
    ("fleet/tui/screens/details.py", "import fleet.headless.output", "fleet layers"),
    # the runner reaching up into a facade that registers with it
    ("fleet/jobs/runner.py", "import fleet.access.exec", "fleet layers"),
    # the profile validator importing the renderer instead of the grammar in core
    ("fleet/profile/validate.py", "import fleet.boot.menus", "fleet layers"),
    # the engine importing the demo instead of being handed it
    ("fleet/engine.py", "import fleet.sim.api", "fleet layers"),
    ("fleet/headless/output.py", "import textual.app", "Textual only in fleet.tui"),
])
def test_a_back_edge_breaks_the_contract(tmp_path, module, line, contract):
    tree = copy_of_project(tmp_path)
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # a deliberate back-edge\n")
    cp = lint(tree)
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert f"{contract} BROKEN" in cp.stdout
    importer = module.removesuffix(".py").replace("/", ".")
    assert importer in cp.stdout


def test_build_kinds_are_the_builders():
    from fleet.build.api import BUILD_KINDS
    from fleet.build.builders import BUILDERS

    assert sorted(BUILD_KINDS) == sorted(BUILDERS)


async def test_each_area_registers_its_job_kinds(tmp_path, monkeypatch):
    from fleet.build.api import BUILD_GROUP, BUILD_KINDS
    from fleet.engine import Engine

    use_isolated_env(monkeypatch, tmp_path)
    engine = await Engine.open(write_profile(tmp_path))
    try:
        kinds = engine.jobs.runner.kinds
        assert {k: kinds[k].group for k in BUILD_KINDS} == dict.fromkeys(BUILD_KINDS, BUILD_GROUP)
        assert kinds["exec"].group == "exec" and kinds["post_boot"].group == "post_boot"
        assert set(kinds) == {*BUILD_KINDS, "exec", "post_boot"}
    finally:
        await engine.close()


def test_no_test_module_imports_another():
    """Shared test code lives in tests/support (or a folder's conftest/seed), never
    in a test module another one imports: collection order must not matter."""
    import re

    importing = re.compile(r"^\s*(from|import)\s+(\w+\.)*test_\w+", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")
                 if importing.search(p.read_text())]
    assert offenders == []
