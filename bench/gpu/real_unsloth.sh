# Call 2 of the real-data run: Unsloth's arms, then a second round of ftwiz's plan and the guide, on the
# machine call 1 (bench/gpu/real.sh) left warm: /tmp/site (ftwiz's wheels), /tmp/site_us (bitsandbytes), the
# saved model and /tmp/ftwiz-real/plan_for_peers.json (ftwiz's plan, which unsloth_matched copies) are there.
# Device: within 30 s of call 1, kind nvidia-h200-x2, carry [".whl_us", ".bench_data"] (../shared/gpu/fetch-unsloth-wheels).
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site_us .whl_us/*.whl || exit 1
real() { python3 bench/real.py --data .bench_data/real-chat "$@"; }
( CUDA_VISIBLE_DEVICES=0 PYTHONPATH=/tmp/site_us real --out $OUT/real-gpu0.json --arms unsloth_matched --timeout-s 220
  CUDA_VISIBLE_DEVICES=0 PYTHONPATH=/tmp/site real --out $OUT/real-gpu0.json --arms ftwiz_plan --suffix _round2 --timeout-s 150
) > $OUT/real-gpu0.log 2>&1 &
( CUDA_VISIBLE_DEVICES=1 PYTHONPATH=/tmp/site_us real --out $OUT/real-gpu1.json --arms unsloth_notebook --timeout-s 250
  CUDA_VISIBLE_DEVICES=1 PYTHONPATH=/tmp/site real --out $OUT/real-gpu1.json --arms guide --suffix _round2 --timeout-s 150
) > $OUT/real-gpu1.log 2>&1 &
wait
tail -n 25 $OUT/real-gpu*.log
