"""The model's files, downloaded before anything loads them, with progress the dashboard can show.

`from_pretrained` downloads a Hub model silently: a first run of an 8B model spends minutes
fetching 16 GB while the dashboard can only say "loading the model". The run process calls
`fetch_model` first instead. It asks huggingface_hub what the files are and which are already in
the cache (`snapshot_download(dry_run=True)`), downloads the missing ones with `hf_hub_download`
(several at once, as snapshot_download does), and counts the bytes through the `tqdm_class`
protocol huggingface_hub reports progress with (plain HTTP and Xet alike). Every second a
`download` event says files and bytes done, speed and time left (docs/events.md).

A local folder, or a model already complete in the cache, downloads nothing and writes nothing.
Offline with the model not in the cache, a Hub id that does not exist, a gated model: one line
(UserError) naming the field and what to do. A download that breaks off is a DownloadFailed with
its suggestion (partial files stay, so a resume continues them).
"""

from __future__ import annotations

import errno
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from ftwiz.core.errors import UserError
from ftwiz.core.events import DownloadEvent

EVENT_EVERY_S = 1.0
"""At most one progress event a second (plus the first and the last)."""
SPEED_WINDOW_S = 5.0
"""Speed is measured over the last few seconds: a stall shows within that time."""
MAX_WORKERS = 8
"""Files downloaded at once (snapshot_download's own default)."""

ALWAYS = ("*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja")
"""Top-level files from_pretrained may read: config, tokenizer, chat template, weights."""
PICKLE = ("*.bin", "*.pt", "*.pth")
PICKLE_SUFFIXES = tuple(p.lstrip("*") for p in PICKLE)
CODE = ("*.py",)


class DownloadFailed(Exception):
    """The download broke off (network, Hub error): the run fails with this suggestion."""

    def __init__(self, message: str, suggestion: str) -> None:
        super().__init__(message)
        self.suggestion = suggestion


def patterns(allow_pickle: bool, trust_remote_code: bool) -> list[str]:
    """allow_patterns for the dry run: what from_pretrained might read, nothing it would refuse."""
    return [*ALWAYS, *(PICKLE if allow_pickle else ()), *(CODE if trust_remote_code else ())]


def files_to_fetch(names: Iterable[str], allow_pickle: bool = False, trust_remote_code: bool = False) -> list[str]:
    """The files of a repository worth downloading before from_pretrained (which fetches anything
    else it needs itself): top-level only (`original/` holds a second copy of Llama's weights);
    transformers' `model*.safetensors` when the repository has them (Mistral's also carry a
    `consolidated.safetensors` copy); pickle weights only with allow_pickle and no safetensors."""
    from fnmatch import fnmatch

    wanted = patterns(allow_pickle, trust_remote_code)
    top = [n for n in names if "/" not in n and any(fnmatch(n, p) for p in wanted) and n != "training_args.bin"]
    safetensors = [n for n in top if n.endswith(".safetensors")]
    if any(n.startswith("model") for n in safetensors):
        top = [n for n in top if not n.endswith(".safetensors") or n.startswith("model")]
    if safetensors:
        top = [n for n in top if not n.endswith(PICKLE_SUFFIXES)]
    return sorted(top)


class Progress:
    """Files and bytes done across the download threads; the progress events are made here."""

    def __init__(self, model: str, files_total: int, bytes_total: int | None, files_done: int, bytes_done: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.model, self.files_total, self.bytes_total = model, files_total, bytes_total
        self.files_done, self.bytes_done = files_done, bytes_done
        self.clock = clock
        self._lock = threading.Lock()
        self._fetched = 0  # bytes received by this process (the speed counts only these)
        self._samples: deque[tuple[float, int]] = deque()
        self.t0 = clock()
        self._samples.append((self.t0, 0))

    def add(self, n: int, fetched: bool = True) -> None:
        with self._lock:
            self.bytes_done += n
            if fetched:
                self._fetched += n

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1

    def speed(self) -> float | None:
        """Bytes a second over the last SPEED_WINDOW_S (None before a second has passed)."""
        now = self.clock()
        with self._lock:
            fetched = self._fetched
        self._samples.append((now, fetched))
        while len(self._samples) > 2 and now - self._samples[1][0] >= SPEED_WINDOW_S:
            self._samples.popleft()
        t, before = self._samples[0]
        return (fetched - before) / (now - t) if now - t >= 0.5 else None

    def average_speed(self) -> float | None:
        elapsed = self.clock() - self.t0
        with self._lock:
            return self._fetched / elapsed if elapsed > 0 else None

    def event(self, done: bool = False) -> DownloadEvent:
        """Now's progress; the last one (done) carries the whole download's average speed."""
        speed = self.average_speed() if done else self.speed()
        with self._lock:
            files_done, bytes_done = self.files_done, self.bytes_done
        left = None if self.bytes_total is None else max(self.bytes_total - bytes_done, 0)
        return DownloadEvent(
            model=self.model,
            files_done=files_done,
            files_total=self.files_total,
            bytes_done=bytes_done,
            bytes_total=self.bytes_total,
            bytes_per_s=None if speed is None else round(speed, 1),
            eta_s=0.0 if done else (round(left / speed, 1) if left is not None and speed else None),
            done=done,
        )


def progress_bar_class(progress: Progress | None) -> type:
    """A tqdm stand-in for `hf_hub_download(tqdm_class=...)` that adds each file's bytes to
    `progress` (None: counts nothing, prints nothing, for the dry run). It offers
    `update_transfer`, so huggingface_hub's Xet path reports through the one bar (as it does for
    snapshot_download's own aggregating bar); bytes count as written."""

    class Bar:
        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, **kwargs: Any) -> None:
            self.total, self.n = total, initial or 0
            if initial and progress is not None:
                progress.add(initial, fetched=False)  # a partial file resumed: on disk, not fetched now

        def update(self, n: int | float | None = 1) -> None:
            n = int(n or 0)
            self.n += n
            if progress is not None:
                progress.add(n)

        def update_transfer(self, n: int | float | None = 1) -> None:
            pass  # network bytes; the bytes written (update) are what the progress counts

        def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
            pass

        set_transfer_postfix_str = set_description = set_description_str = set_postfix_str

        def refresh(self, *args: Any, **kwargs: Any) -> None:
            pass

        def close(self) -> None:
            pass

        def __enter__(self) -> Bar:
            return self

        def __exit__(self, *exc: Any) -> None:
            pass

    return Bar


def fetch_model(
    name_or_path: str,
    emit: Callable[[DownloadEvent], object],
    *,
    revision: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    interval_s: float = EVENT_EVERY_S,
    max_workers: int = MAX_WORKERS,
    resume_command: str = "ftwiz resume",
) -> None:
    """Download what from_pretrained will read of this model into the Hugging Face cache,
    emitting `download` events; nothing for a local folder or a model already in the cache.
    `resume_command`: what a DownloadFailed's suggestion tells the user to run (the run's own)."""
    from ftwiz.core.engine.model_source import model_source

    source = model_source(name_or_path)
    if Path(source).expanduser().exists():
        return
    infos = _plan(source, revision, allow_pickle, trust_remote_code)
    if infos is None or not any(info.will_download for info in infos):
        return
    sizes = [info.file_size for info in infos]
    cached = [info for info in infos if not info.will_download]
    progress = Progress(
        source,
        files_total=len(infos),
        bytes_total=None if any(s is None for s in sizes) else sum(sizes),
        files_done=len(cached),
        bytes_done=sum(info.file_size or 0 for info in cached),
    )
    missing = [info for info in infos if info.will_download]
    emit(progress.event())
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(interval_s):
            try:
                emit(progress.event())
            except OSError:
                pass  # events.jsonl unwritable for now (disk full): the download goes on; the main thread reports

    ticker = threading.Thread(target=tick, name="ftwiz-download-progress", daemon=True)
    ticker.start()
    try:
        _download(source, missing, progress, max_workers, resume_command)
    finally:
        stop.set()
        ticker.join()
    emit(progress.event(done=True))


def _plan(source: str, revision: str | None, allow_pickle: bool, trust_remote_code: bool) -> list[Any] | None:
    """The files to fetch, as huggingface_hub's DryRunFileInfo (pinned to one commit); None when
    the Hub cannot be asked but the cache has the model (from_pretrained then loads it offline)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        DryRunError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from ftwiz.core.hub import hub_reachable

    if constants.HF_HUB_OFFLINE or not hub_reachable():
        return _offline(source, revision)
    try:
        infos = snapshot_download(source, revision=revision, allow_patterns=patterns(allow_pickle, trust_remote_code),
                                  dry_run=True, tqdm_class=progress_bar_class(None))
    except (DryRunError, LocalEntryNotFoundError) as exc:  # the Hub did not list the files: why?
        cause = exc.__cause__
        if isinstance(cause, (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError)):
            raise _hub_error(cause, source, revision) from None
        return _offline(source, revision)
    except (RepositoryNotFoundError, RevisionNotFoundError, HFValidationError) as exc:
        raise _hub_error(exc, source, revision) from None
    keep = set(files_to_fetch([info.filename for info in infos], allow_pickle, trust_remote_code))
    return [info for info in infos if info.filename in keep]


def _hub_error(exc: Exception, source: str, revision: str | None) -> UserError:
    """What the Hub said, as one line naming the field and what to do."""
    from huggingface_hub.errors import GatedRepoError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):
        return UserError(f"model.name_or_path: {source} is gated: accept its terms on "
                         f"https://huggingface.co/{source}, then log in here (`hf auth login`)")
    if isinstance(exc, RevisionNotFoundError):
        return UserError(f"model.revision: {revision}: no such branch, tag or commit in {source}")
    if isinstance(exc, ValueError):  # HFValidationError
        return UserError(f"model.name_or_path: {source}: neither a local folder nor a Hugging Face Hub id (org/name)")
    return UserError(f"model.name_or_path: {source}: not found on the Hugging Face Hub (a private model needs "
                     "`hf auth login`)")


def _offline(source: str, revision: str | None) -> None:
    """No Hub: fine when the cache holds the model (from_pretrained reads it), else one line."""
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(source, "config.json", revision=revision), str)
    except Exception:  # noqa: BLE001 - not a repo id: the Hub would not have it either
        cached = False
    if cached:
        return None
    raise UserError(
        f"model.name_or_path: {source} is not on this machine and the Hugging Face Hub cannot be reached "
        "(offline, or HF_HUB_OFFLINE=1); download it where there is network (`hf download "
        f"{source}`, then copy the folder here) and give its folder as the model"
    )


def _download(source: str, missing: list[Any], progress: Progress, max_workers: int, resume_command: str) -> None:
    """hf_hub_download of each missing file, several at once; the first failure stops the rest."""
    from huggingface_hub import hf_hub_download

    bar = progress_bar_class(progress)

    def one(info: Any) -> None:
        hf_hub_download(source, info.filename, revision=info.commit_hash, tqdm_class=bar)
        progress.file_done()

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(missing))),
                            thread_name_prefix="ftwiz-download") as pool:
        futures = [pool.submit(one, info) for info in missing]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f.exception() for f in finished if f.exception() is not None), None)
        if failed is not None:
            for future in futures:
                future.cancel()
    if failed is None:
        return
    if isinstance(failed, OSError) and failed.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        raise failed  # disk full: the run's own message for it (process.py)
    reason = f"{type(failed).__name__}: {failed}".splitlines()[0][:300]
    raise DownloadFailed(
        f"downloading {source} broke off: {reason}",
        f"check the network (and the Hub's status), then `{resume_command}` continues the download where it stopped",
    ) from failed
