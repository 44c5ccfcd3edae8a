#!/bin/sh
# The GPU checks, on a GPU machine without Docker (its python3 has a CUDA torch), from the bundle that
# `make gpu-bundle` leaves in .gpu/: site.tar.xz (the unsloth lock's packages the machine lacks, for its
# Python), llama.tar.xz (llama_cpp/ with the CUDA backend), model-files/ (SmolLM2-135M's config and tokenizer),
# convert/ (llama.cpp's converter). Reports go to $OUT (default gpu-check/); arguments go to gpu_train_check.py.
set -u
out=${OUT:-gpu-check}
mkdir -p "$out"
site=$(mktemp -d)
llama=$(mktemp -d)
for archive in site:"$site" llama:"$llama"; do
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
    ".gpu/${archive%%:*}.tar.xz" "${archive#*:}" || exit 2
done
export PYTHONPATH="$site" PYTHONUNBUFFERED=1
nvidia-smi >"$out/nvidia-smi.txt" 2>&1
python3 -c 'import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))'
python3 scripts/gguf_gpu_check.py --site "$llama" --random-like .gpu/model-files --converter .gpu/convert \
  >"$out/gguf_gpu.json" 2>"$out/gguf_gpu.stderr.txt"
gguf=$?
echo "gguf check: exit $gguf"; cat "$out/gguf_gpu.json"
python3 scripts/gpu_train_check.py --model-files .gpu/model-files --out "$out/train" --timeout "${RUN_TIMEOUT:-200}" "$@"
train=$?
echo "train check: exit $train"
cp "$out/train/gpu_train.json" "$out/" 2>/dev/null
python3 -c '
import sys, tarfile
with tarfile.open(sys.argv[1], "w:gz") as tar:
    for name in sys.argv[3:]:
        tar.add(sys.argv[2] + "/" + name, name)
' "$out/logs.tar.gz" "$out" train gguf_gpu.stderr.txt && rm -rf "$out/train" "$out/gguf_gpu.stderr.txt"
[ "$gguf" = 0 ] && [ "$train" = 0 ]
