"""ftwiz.core must be usable from a plain script: importing it never imports Textual."""

import os
import subprocess
import sys


def test_core_never_imports_textual():
    code = (
        "import importlib, pkgutil, sys, ftwiz.core as c\n"
        "for m in pkgutil.walk_packages(c.__path__, 'ftwiz.core.'):\n"
        "    if m.name != 'ftwiz.core.engine.__main__': importlib.import_module(m.name)\n"
        "bad = [n for n in sys.modules if n == 'textual' or n.startswith(('textual.', 'ftwiz.tui', 'ftwiz.screens'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_linter_contract_is_kept(tmp_path):
    """The contract in pyproject.toml, checked by import-linter over the source tree.

    The editable install maps folders onto `ftwiz.*` with an import hook that import-linter
    cannot follow, so it reads a tree of links shaped like the installed package.
    """
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    package = tmp_path / "ftwiz"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for folder in ("core", "tui", "screens", "cli"):
        (package / folder).symlink_to(repo / folder)
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--config", str(repo / "pyproject.toml"), "--no-cache"],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout
