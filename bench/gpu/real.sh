# The real-data benchmark (bench/real.py) on the GPU machine. Device: carry [".whl", ".bench_data"].
# REAL_PLAN names what runs: lines of "GPU|ARGS" (bench/real.py arguments), the lines of one GPU in
# order, the GPUs side by side (one arm per GPU at a time; two GPUs on nvidia-h200-x2).
source bench/gpu/setup.sh
mkdir -p /tmp/site_us && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site_us .whl/bitsandbytes*.whl
python3 -c "import sys; sys.path.insert(0,'bench'); import real; from pathlib import Path; real.build_model('${REAL_MODEL:-llama-3.1-8b}', Path('.bench_data/real-chat'), Path('/tmp/ftwiz-real'), False)" 2>&1 | tail -2
[ -n "${PACKING_CHECK:-}" ] && python3 bench/packing_check.py --out $OUT/packing-check-h200.json 2>&1 | tail -3
for gpu in $(echo "$REAL_PLAN" | cut -d'|' -f1 | sort -u); do
  ( echo "$REAL_PLAN" | grep "^$gpu|" | cut -d'|' -f2- | while read -r line; do
      eval "CUDA_VISIBLE_DEVICES=$gpu python3 bench/real.py --data .bench_data/real-chat --out $OUT/real-gpu$gpu.json $line"
    done ) > "$OUT/real-gpu$gpu.log" 2>&1 &
done
wait
tail -n 30 $OUT/real-gpu*.log
