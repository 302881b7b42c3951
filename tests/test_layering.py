"""ftwiz.core must be usable from a plain script: importing it never imports Textual."""

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
