# Sourced at the start of every device command: wheels the GPU image lacks, then ftwiz itself.
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "ftwiz install failed" >&2
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
