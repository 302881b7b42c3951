"""Checkpoints that are either complete or invisible.

The Trainer writes each checkpoint into checkpoints/.staging-<step>/checkpoint-<step>; when
every file is written (and every rank is done), a COMPLETE marker is written and fsynced,
and the directory is renamed to checkpoints/checkpoint-<step>. rename() within one
filesystem is atomic, so a kill -9 or a full disk during a save leaves at worst a staging
directory, which resume ignores and the next start removes. Only directories with the
marker count: a checkpoint-<step> without it (e.g. copied by hand) is skipped too.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

COMPLETE_MARKER = "COMPLETE"
STAGING_PREFIX = ".staging-"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest step first."""
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for path in checkpoints_dir.iterdir():
        match = _CHECKPOINT_RE.match(path.name)
        if match and path.is_dir() and (path / COMPLETE_MARKER).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    done = complete_checkpoints(checkpoints_dir)
    return done[-1] if done else None


def checkpoint_step(path: Path) -> int:
    match = _CHECKPOINT_RE.match(path.name)
    return int(match.group(1)) if match else 0


def staging_root(checkpoints_dir: Path, step: int) -> Path:
    return checkpoints_dir / f"{STAGING_PREFIX}{step}"


def remove_partial(checkpoints_dir: Path) -> list[str]:
    """Delete staging leftovers of an interrupted save; return their names."""
    removed = []
    if checkpoints_dir.is_dir():
        for path in checkpoints_dir.iterdir():
            if path.name.startswith(STAGING_PREFIX):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
    return removed


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def finalize(staged: Path, final: Path) -> Path:
    """Mark a fully written checkpoint complete and move it into place atomically."""
    for file in staged.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    marker = staged / COMPLETE_MARKER
    with open(marker, "w", encoding="ascii") as handle:
        handle.write("ok\n")
        handle.flush()
        os.fsync(handle.fileno())
    if final.exists():  # the same step saved again (e.g. stop right after a scheduled save)
        _discard(final)
    os.rename(staged, final)
    _fsync_dir(final.parent)
    return final


def rotate(checkpoints_dir: Path, keep: int, keep_also: str | Path | None = None) -> list[Path]:
    """Keep the newest `keep` complete checkpoints (partial ones never count), and `keep_also`
    (the one with the best evaluation loss) whatever its age."""
    done = complete_checkpoints(checkpoints_dir)
    spared = Path(keep_also).name if keep_also else None
    old = [path for path in (done[:-keep] if keep > 0 else []) if path.name != spared]
    for path in old:
        _discard(path)
    return old


def _discard(path: Path) -> None:
    """Rename out of sight first, so a kill during the delete never leaves a half-deleted
    directory that still looks complete."""
    doomed = path.with_name(f"{STAGING_PREFIX}old-{path.name}")
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
