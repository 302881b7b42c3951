"""Reading a large truncated JSON export (issue 12): ftwiz's reader against the size of the file.

Writes a ShareGPT-style JSON array of about SIZE_MB megabytes (conversations of the real export's
median length, some opening with the assistant, some with an empty turn), cut in the middle of a
row as an interrupted download leaves it, then times `ftwiz.core.data_load.load_rows` (CPU time of
this one process: one core) and `validate(..., drop_invalid=True)`. Before issue 12 the reader
counted line numbers from the start of the file for every row: 8 MB took 1.6 s, 32 MB 21 s, the
real 125 MB export over 5 minutes.

    python bench/json_export.py                  # 125 MB, writes results/json-export.json
    python bench/json_export.py --size-mb 8      # quicker
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def write_export(path: Path, size_mb: float) -> tuple[int, int]:
    """The export and (rows written whole, bytes)."""
    words = "the quick brown fox jumps over the lazy dog; " * 60
    rows = [
        {"id": "a", "conversations": [{"from": "human", "value": words[:900]}, {"from": "gpt", "value": words * 3}]},
        {"id": "b", "conversations": [{"from": "gpt", "value": words}, {"from": "human", "value": words[:400]}]},
        {"id": "c", "conversations": [{"from": "human", "value": words[:600]}, {"from": "gpt", "value": ""}]},
    ]
    texts = [json.dumps(r, ensure_ascii=False, indent=1) for r in rows]
    target, written, count = size_mb * 1e6, 2, 0
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[\n")
        while written < target:
            text = texts[count % len(texts)]
            handle.write(text + ",\n")
            written += len(text) + 2
            count += 1
        handle.write(texts[0][: len(texts[0]) // 2])  # cut mid-row
    return count, path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=125.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "json-export.json")
    args = parser.parse_args()
    from ftwiz.core.data import validate
    from ftwiz.core.data_load import load_rows

    with tempfile.TemporaryDirectory(prefix="ftwiz-bench-") as tmp:
        path = Path(tmp) / "export.json"
        rows, size = write_export(path, args.size_mb)
        started = time.process_time()
        loaded = load_rows(path)
        read_s = time.process_time() - started
        started = time.process_time()
        report = validate(str(path), drop_invalid=True)
        validate_s = time.process_time() - started
    result = {
        "file_mb": round(size / 1e6, 1),
        "rows_whole": rows,
        "rows_read": len(loaded.rows),
        "problem": str(loaded.problems[0]).split(": ", 1)[-1] if loaded.problems else None,
        "read_cpu_s": round(read_s, 2),
        "validate_drop_invalid_cpu_s": round(validate_s, 2),
        "kept": len(report.kept),
        "dropped": report.dropped,
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
