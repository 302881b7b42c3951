# Device call 1: the GPU fixture, then the memory/throughput matrix (budget ~520 s).
set -o pipefail
. bench/gpu/setup.sh
python3 -m ftwiz.cli gpus --json > "$OUT/h200.json" 2> "$OUT/gpus.err"
python3 bench/matrix.py --out "$OUT/matrix.json" --budget-s "${BUDGET_S:-520}" --timeout-s 150 --warmup 2 --steps 4 2>&1 | tee "$OUT/matrix.log"
