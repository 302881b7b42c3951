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
    assert "5 kept, 0 broken" in result.stdout


def test_the_wheel_installs_and_every_module_imports(tmp_path):
    """Built as a release is, installed (not editable) into a fresh environment: every module,
    the package data (measured ratios, styles) included, imports from the installed files.

    The fresh environment sees this one's dependencies through a path entry (not its .pth files,
    so not the editable install), and pip installs the wheel alone (--no-deps, offline).
    """
    import site
    import sysconfig
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(wheels), str(repo)],
        check=True, capture_output=True, cwd=tmp_path,
    )
    (wheel,) = wheels.glob("ftwiz-*.whl")
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    deps = [sysconfig.get_path("purelib"), *site.getsitepackages()]
    (Path(purelib) / "_deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                    "-q", str(wheel)], check=True, capture_output=True)
    code = (
        "import importlib, pkgutil, ftwiz, ftwiz.core.recommend as r\n"
        "names = [m.name for m in pkgutil.walk_packages(ftwiz.__path__, 'ftwiz.')]\n"
        "for name in names:\n"
        "    if not name.endswith('__main__'): importlib.import_module(name)\n"
        f"assert all(p.startswith({purelib!r}) for p in ftwiz.__path__), ftwiz.__path__\n"
        "assert r.measured_speedups(), 'core/measured.json missing from the wheel'\n"
        "assert 'ftwiz.screens.settings' in names and 'ftwiz.core.monitor' in names, names\n"
    )
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
