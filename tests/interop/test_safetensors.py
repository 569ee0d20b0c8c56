#!/usr/bin/env python3
"""test_safetensors.py: our frames are safetensors files, both ways.

Files written by Python's safetensors go through our reader and writer
(`$LMK_BIN/tsr cat FILE -o OUT`) and come back loadable by safetensors with
the same names, dtypes, shapes, bytes and metadata; without metadata (whose
order Python does not fix) the bytes are identical to Python's. Covered:
every dtype numpy has (F64 F32 F16 I64 I32 I16 I8 U8 U16 U32 BOOL) with
0-d, empty and 8-d shapes and NaN, inf, -0 and subnormals; BF16 from a
hand-made file checked by safetensors itself; gzip input (Python's gzip,
concatenated members); gzip output (`tsr cat -z`) that Python's gzip opens;
a file of over 1 MiB (the mapped path).
Exit 0 pass, 1 fail, 77 skip (no numpy or safetensors, or no tsr yet).
"""
import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile


def skip(why):
    print(f"test_safetensors: skipped: {why}")
    sys.exit(77)


def fail(why):
    print(f"test_safetensors: FAIL: {why}")
    sys.exit(1)


try:
    import numpy as np
    import safetensors
    from safetensors import safe_open
    from safetensors.numpy import load, save
except Exception as e:  # ImportError, or a broken installation
    skip(f"numpy and safetensors are needed ({e})")

root = os.environ.get("LMK_ROOT", os.getcwd())
bindir = os.environ.get("LMK_BIN", os.path.join(root, "build", "bin"))
tsr = os.path.join(bindir, "tsr")
if not os.access(tsr, os.X_OK):
    skip(f"{tsr} is not built")

tmp = tempfile.mkdtemp(prefix="lmk-interop-")


def run_cat(src, dst, *flags):
    p = subprocess.run([tsr, "cat", *flags, src, "-o", dst], capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"tsr cat {' '.join(flags)} {src}: exit {p.returncode}: {p.stderr.strip()}")


def raw_tensors(data):
    """name -> (dtype, shape, bytes), straight from safetensors' parser"""
    return {name: (t["dtype"], list(t["shape"]), bytes(t["data"]))
            for name, t in safetensors.deserialize(data)}


def compare(name, src_bytes, out_path, metadata):
    with open(out_path, "rb") as f:
        out = f.read()
    a, b = raw_tensors(src_bytes), raw_tensors(out)
    if a.keys() != b.keys():
        fail(f"{name}: names {sorted(a)} became {sorted(b)}")
    for k in a:
        if a[k] != b[k]:
            fail(f"{name}: tensor '{k}': {a[k][:2]} became {b[k][:2]}, or its bytes changed")
    with safe_open(out_path, framework="numpy") as f:
        got = f.metadata() or {}
    if got != (metadata or {}):
        fail(f"{name}: metadata {metadata} became {got}")
    # what safetensors' own writer would make of it: Python sorts tensors by
    # alignment and name, and so does our reader (by data offset)
    n = struct.unpack("<Q", out[:8])[0]
    if (8 + n) % 8 != 0:
        fail(f"{name}: header length {n}: 8 + N is not a multiple of 8")
    if len(metadata or {}) <= 1 and out != src_bytes:
        fail(f"{name}: bytes differ from Python's (header {out[8:8 + n]!r})")
    return out


def check_numpy(name, tensors, metadata=None, gz=False):
    data = save(tensors, metadata=metadata)
    src = os.path.join(tmp, name + ".safetensors")
    with open(src, "wb") as f:
        f.write(gzip.compress(data) if gz else data)
    out = os.path.join(tmp, name + ".out")
    run_cat(src, out)
    compare(name, data, out, metadata)
    back = load(open(out, "rb").read())
    for k, v in tensors.items():
        w = back[k]
        if w.dtype != v.dtype or w.shape != v.shape or w.tobytes() != v.tobytes():
            fail(f"{name}: tensor '{k}' differs after the round trip")


rng = np.random.default_rng(0)
numeric = {
    "float64": np.float64, "float32": np.float32, "float16": np.float16,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "bool": np.bool_,
}
shapes = [(), (1,), (7,), (0,), (3, 0), (2, 3), (5, 1, 33), (2, 1, 3, 1, 2, 1, 1, 2), (64, 129)]
tensors = {}
for dname, dt in numeric.items():
    for i, shape in enumerate(shapes):
        if dt == np.bool_:
            v = rng.integers(0, 2, size=shape).astype(np.bool_)
        elif np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            v = rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
        else:
            v = rng.standard_normal(size=shape).astype(dt)
        tensors[f"{dname}.{i}"] = np.ascontiguousarray(v)
for dt in (np.float64, np.float32, np.float16):
    fi = np.finfo(dt)
    tensors[f"special.{np.dtype(dt).name}"] = np.array(
        [np.nan, np.inf, -np.inf, -0.0, 0.0, fi.tiny, fi.tiny / 4, fi.max, -fi.max], dtype=dt)

check_numpy("all", tensors)
check_numpy("all_meta", tensors, metadata={"kind": "test", "schema": "1", "note": "caf\u00e9 \"q\""})
check_numpy("one_meta", {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, metadata={"kind": "x"})
check_numpy("empty", {})
check_numpy("gz", tensors, metadata={"kind": "gz"}, gz=True)
check_numpy("big", {"w": rng.standard_normal(size=(600, 600)).astype(np.float32),
                    "b": np.arange(3, dtype=np.int64)})

# BF16, which numpy lacks: a file made by hand, which safetensors must agree
# with before we compare what comes back.
bf = np.array([0x3f80, 0xc040, 0x7f80, 0xff80, 0x7fc0, 0x0001, 0x8000, 0x7f7f], dtype="<u2").tobytes()
hdr = {"__metadata__": {"kind": "bf16"},
       "b": {"dtype": "BF16", "shape": [2, 4], "data_offsets": [0, 16]},
       "s": {"dtype": "BF16", "shape": [], "data_offsets": [16, 18]},
       "e": {"dtype": "BF16", "shape": [0, 3], "data_offsets": [18, 18]}}
h = json.dumps(hdr, separators=(",", ":")).encode()
h += b" " * ((8 - len(h) % 8) % 8)
data = struct.pack("<Q", len(h)) + h + bf + bf[:2]
src = os.path.join(tmp, "bf16.safetensors")
with open(src, "wb") as f:
    f.write(data)
with safe_open(src, framework="numpy") as f:
    if f.get_slice("b").get_dtype() != "BF16" or f.get_slice("b").get_shape() != [2, 4]:
        fail("bf16: safetensors reads the hand-made file differently")
out = os.path.join(tmp, "bf16.out")
run_cat(src, out)
compare("bf16", data, out, {"kind": "bf16"})

# gzip: concatenated members in (as `cat a.gz b.gz` gives), gzip out
data = save({"x": np.arange(1000, dtype=np.float32)})
src = os.path.join(tmp, "cat.gz")
with open(src, "wb") as f:
    f.write(gzip.compress(data[:100]) + gzip.compress(data[100:]))
out = os.path.join(tmp, "cat.out")
run_cat(src, out)
compare("cat.gz", data, out, None)
out = os.path.join(tmp, "z.out")
run_cat(src, out, "-z")
with open(out, "rb") as f:
    z = f.read()
if z[:2] != b"\x1f\x8b":
    fail("tsr cat -z did not write gzip")
if gzip.decompress(z) != data:
    fail("tsr cat -z: gzip.decompress gives other bytes")

# through standard input and output
data = save({"x": np.arange(5, dtype=np.int16)})
p = subprocess.run([tsr, "cat", "-", "-o", "-", "--force"], input=data, capture_output=True)
if p.returncode != 0 or p.stdout != data:
    fail(f"tsr cat - -o -: exit {p.returncode}, {len(p.stdout)} bytes: {p.stderr.decode().strip()}")

subprocess.run(["rm", "-rf", tmp])
print("test_safetensors: ok")
