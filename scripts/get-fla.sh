#!/bin/sh
# get-fla.sh: fetches the wheels of flash-linear-attention (fla, Triton
# kernels: the baselines of the mixer benchmarks) and of what it needs
# beyond PyTorch, into .whl/ (ignored by git), to carry to the GPU machine,
# which has PyTorch and Triton but no network:
#   scripts/get-fla.sh            here
#   pip install --no-deps --target /tmp/fla .whl/*.whl   there (bench/mixers_gpu.sh does it)
#
#   FLA_VERSION   the version (0.6.0, the one the benchmarks were written for)
set -eu
V=${FLA_VERSION:-0.6.0}
mkdir -p .whl
python3 -m pip download --no-deps --dest .whl "flash-linear-attention==$V" "fla-core==$V" einops
ls -la .whl
