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


BAD_PREFIX = "bad-"
_TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def verify(path: Path) -> str | None:
    """Why a complete-marked checkpoint cannot be resumed from, or None when its files load:
    trainer_state.json parses, every safetensors header and tensor reads, every torch file
    (optimizer, scheduler, RNG states: zip archives) passes its CRC check."""
    import json
    import zipfile

    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        if not isinstance(state, dict):
            return "trainer_state.json: not a JSON object"
    except (OSError, ValueError, RecursionError) as exc:
        return f"trainer_state.json: {getattr(exc, 'strerror', None) or str(exc).splitlines()[0][:120]}"
    for file in sorted(path.rglob("*")):
        if not file.is_file():
            continue
        name = file.relative_to(path)
        try:
            if file.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(file), "np") as handle:  # numpy: no torch needed to check the bytes
                    for key in handle.keys():
                        handle.get_slice(key)
            elif file.suffix in _TORCH_SUFFIXES and file.name != "training_args.bin":
                with zipfile.ZipFile(file) as archive:
                    bad = archive.testzip()
                if bad is not None:
                    return f"{name}: damaged ({bad} fails its CRC check)"
        except Exception as exc:  # noqa: BLE001 - any reader failure means the file is not usable
            return f"{name}: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}"
    return None


def usable_checkpoint(checkpoints_dir: Path, set_aside: bool = True) -> tuple[Path | None, list[tuple[str, str]]]:
    """The newest complete checkpoint whose files load, and the (name, reason) of each newer one
    that did not; those are renamed to bad-checkpoint-<step> (kept for a look, never resumed
    from, never counted by the rotation) when set_aside."""
    bad: list[tuple[str, str]] = []
    for path in reversed(complete_checkpoints(checkpoints_dir)):
        why = verify(path)
        if why is None:
            return path, bad
        if set_aside:
            target = path.with_name(f"{BAD_PREFIX}{path.name}")
            if target.exists():
                _discard(target)
            os.rename(path, target)
        bad.append((path.name, why))
    return None, bad
