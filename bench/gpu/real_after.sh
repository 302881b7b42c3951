# The command after bench/gpu/real.sh on the same warm machine (within 30 s of it): Unsloth's arms
# (their own wheels, ../shared/gpu/fetch-unsloth-wheels) and more ftwiz arms, one after another on
# GPU 0. /tmp/site (ftwiz's wheels), the saved model and /tmp/ftwiz-real/plan_for_peers.json (the
# last ftwiz plan, which unsloth_matched copies) are left there by real.sh.
# Device: carry [".whl_us", ".bench_data"]. AFTER_PLAN: lines "us|ARGS" (Unsloth's wheels) or
# "ftwiz|ARGS" (ftwiz's), bench/real.py arguments, run in order.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site_us .whl_us/*.whl || exit 1
echo "$AFTER_PLAN" | while IFS='|' read -r site line; do
  [ -z "$site" ] && continue
  path=/tmp/site; [ "$site" = us ] && path=/tmp/site_us
  eval "PYTHONPATH=$path python3 bench/real.py --data .bench_data/real-chat --out $OUT/real-gpu0.json $line"
done > $OUT/real-gpu0.log 2>&1
grep -A1 "^==" $OUT/real-gpu0.log
