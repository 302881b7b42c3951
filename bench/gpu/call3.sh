# Device call 3: LoRA and QLoRA end to end through `ftwiz train` on Llama-3.2-1B shapes (random weights).
set -o pipefail
. bench/gpu/setup.sh
python3 bench/e2e.py --out "$OUT/e2e.json" --model llama-3.2-1b --steps 40 --timeout-s 200 2>&1 | tee "$OUT/e2e.log"
