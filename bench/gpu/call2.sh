# Device call 2: speed against the guide's baseline (alternating arms), then the matrix configs call 1 left.
set -o pipefail
. bench/gpu/setup.sh
python3 bench/speed.py --out "$OUT/speed.json" --budget-s "${SPEED_BUDGET_S:-330}" --rounds 2 2>&1 | tee "$OUT/speed.log"
python3 bench/matrix.py --out "$OUT/matrix.json" --budget-s "${MATRIX_BUDGET_S:-190}" --timeout-s 120 --warmup 2 --steps 4 \
  --only "qwen2.5-7b/lora/ckpt-off/mb4/s2048,qwen2.5-7b/qlora,llama-3.1-8b/lora/ckpt-on/mb16/s2048,llama-3.1-8b/qlora/ckpt-on/mb2/s2048,lora+liger" 2>&1 | tee "$OUT/matrix.log"
