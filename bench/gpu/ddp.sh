# One GPU vs two through `ftwiz train` (accelerate DDP), and the dashboard on a live QLoRA run.
# Device: run "bash bench/gpu/ddp.sh", kind nvidia-h200-x2, carry [".whl"], timeout 600.
source bench/gpu/setup.sh
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
set -o pipefail
python3 bench/ddp.py --out "$OUT/ddp-h200x2.json" --screenshot-dir "$OUT" ${DDP_ARGS:-} 2>&1 | tee "$OUT/ddp-h200x2.log"
