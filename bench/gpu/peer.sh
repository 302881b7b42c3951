# Peer comparison (issue 5, 4c): ftwiz vs Unsloth vs transformers+peft on the H200.
# Here first: bash ../shared/gpu/fetch-unsloth-wheels; bash ../shared/gpu/fetch-wheels; then
#   mkdir -p .whl_c1 && cp .whl_us/*.whl .whl/{liger_kernel,pydantic,annotated_types,typing_inspection,platformdirs}*.whl .whl_c1/
# Device: run "bash bench/gpu/peer.sh", carry [".whl_c1"], timeout 600 (no bitsandbytes: 16-bit LoRA only).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl_c1/*.whl || exit
mkdir -p /tmp/site/ftwiz && touch /tmp/site/ftwiz/__init__.py
for d in core cli tui screens; do ln -sfn "$PWD/$d" "/tmp/site/ftwiz/$d"; done
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
nvidia-smi -L
set -o pipefail
python3 bench/peer.py --out "$OUT/peer-h200.json" --budget-s "${PEER_BUDGET_S:-530}" ${PEER_ARGS:-} 2>&1 | tee "$OUT/peer-h200.log"
