#!/bin/sh
# gpu-pack.sh: packs what a GPU session needs from a CUDA build into one
# compressed file, $BUILD/carry.tar.xz, small enough for the device tool's
# carry limit (64 MiB): the GPU test binaries (and test_arctrain, if built), the programs, the benchmark
# binaries, and the shared libraries they need beyond glibc, libstdc++ and
# CUDA's own (scripts/gpu-check.sh --bundle). On the GPU machine:
#   tar xJf build-gpu/carry.tar.xz && scripts/gpu-check.sh
#
#   BUILD=build-gpu scripts/gpu-pack.sh
set -eu
BUILD=${BUILD:-build-gpu}
[ -d "$BUILD/tests" ] || { echo "gpu-pack: no $BUILD/tests (make BUILD=$BUILD CUDA=1 first)" >&2; exit 2; }
BUILD=$BUILD scripts/gpu-check.sh --bundle >/dev/null
for b in "$BUILD"/bin/* "$BUILD"/bench/*; do
	[ -x "$b" ] && [ -f "$b" ] || continue
	ldd "$b" 2>/dev/null | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
	case $(basename "$lib") in
	libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | ld-linux* | \
		libstdc++.so* | libgcc_s.so* | libcublas* | libcudart* | libnccl*) ;;
	*) [ -f "$BUILD/tests/lib/$(basename "$lib")" ] || cp -L "$lib" "$BUILD/tests/lib/" ;;
	esac
done
# test_arctrain: its CUDA case trains on the GPU (the rest of it is CPU)
list=$(cd . && ls -d "$BUILD"/tests/test_cuda* "$BUILD"/tests/test_arctrain "$BUILD"/tests/lib "$BUILD"/bin/* \
	$(ls "$BUILD"/bench/* 2>/dev/null | grep -v '\.[od]$' || true) 2>/dev/null | grep -v '\.[od]$')
# xz -9: its 64 MiB window sees that the binaries share most of their bytes
# (each links every kernel of liblmk.a): about 19 MB where -6 gives 70.
tar cf - $list | xz -9 -T2 >"$BUILD/carry.tar.xz.tmp" || exit 1
mv "$BUILD/carry.tar.xz.tmp" "$BUILD/carry.tar.xz"
ls -la "$BUILD/carry.tar.xz"
