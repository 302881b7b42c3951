# Device call 2: speed against the guide's baseline (alternating arms), `ftwiz train` end to end,
# then whichever matrix configurations of call 1 were left, in the time that remains.
set -o pipefail
. bench/gpu/setup.sh
timeout 310 python3 bench/speed.py --out "$OUT/speed.json" --budget-s 290 --rounds 2 2>&1 | tee "$OUT/speed.log"
timeout 190 python3 bench/e2e.py --out "$OUT/e2e.json" --model llama-3.2-1b --steps 30 --timeout-s 90 2>&1 | tee "$OUT/e2e.log"
left=$((575 - SECONDS))
[ "$left" -gt 70 ] && python3 bench/matrix.py --out "$OUT/matrix.json" --budget-s $((left - 20)) --timeout-s 60 --warmup 2 --steps 4 \
  --only "llama-3.1-8b/lora+liger,llama-3.1-8b/qlora/ckpt-on/mb2/s2048,llama-3.1-8b/lora/ckpt-on/mb16/s2048,qwen2.5-7b" --skip "qwen2.5-7b/lora/ckpt-on" 2>&1 | tee "$OUT/matrix.log"
true
