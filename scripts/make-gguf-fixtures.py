#!/usr/bin/env python3
"""make-gguf-fixtures.py: writes the GGUF fixtures that tests/test_gguf.c reads,
with gguf-py (pip install gguf) as the reference.

    scripts/make-gguf-fixtures.py [OUTDIR]      (default tests/fixtures/gguf)

Files written to OUTDIR:
  <type>.gguf, <type>.f32   one tensor "w" of ggml type <type> (f32, f16, bf16,
                            q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k,
                            q6_k) and its dequantization by
                            gguf.quants.dequantize as raw little-endian float32.
                            Quantized tensors are 3 rows of 512 (2 or 16 blocks
                            a row); the plain types 3 rows of 33.
      Where gguf-py can quantize (q8_0, q4_0, q4_1, q5_0, q5_1) rows 0 and 1
      are gguf.quants.quantize of normal random data; every other row of
      every quantized type is random block bytes (all bit patterns of the
      packed values and scales) with random finite f16 scales, zero and
      subnormal ones included: gguf-py has no quantizer for the k-quants,
      and random blocks cover more of the decoder than quantized data does.
      f16 and bf16 hold random values plus -0, inf, -inf, NaN, subnormals.
  meta.gguf                 metadata of every value type, arrays of scalars
                            and strings, nested arrays, general.alignment 64,
                            and two small tensors (f32 "a" ne [5], f16 "b"
                            ne [3, 2]); see test_gguf.c for the values.
  tiny-llama.gguf           a Llama model (hidden 32, 4 heads, 2 kv heads,
                            head dim 8, intermediate 40, vocab 37, 2 layers,
                            attention biases, untied output) as llama.cpp's
                            converter writes it: Hugging Face tensors renamed,
                            rows of attn_q and attn_k (weights and biases)
                            permuted for llama.cpp's rotary layout, 2-D
                            tensors F16, 1-D ones F32.
  tiny-llama-tied.gguf      the same without output.weight and without
                            biases (tied embeddings).
  llama3-rope.gguf          the tiny Llama's metadata and a rope_freqs.weight
                            tensor for Llama 3 rope scaling (no weights).
  tiny-llama.safetensors    the Hugging Face tensors (names and (out, in)
                            layout) that both GGUF files must load back to,
                            rounded through f16 where the GGUF stores f16.

The script checks its own permutation against transformers' reverse one
(LlamaTensorProcessor._reverse_permute_weights) when transformers is there.
Seeds are fixed: running it again writes the same bytes.
"""
import json
import os
import struct
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize, quantize

ROWS = 3
QCOLS = 512
PCOLS = 33

# (name, type, quantizable by gguf-py)
TYPES = [
    ("f32", QT.F32, True), ("f16", QT.F16, True), ("bf16", QT.BF16, True),
    ("q8_0", QT.Q8_0, True), ("q4_0", QT.Q4_0, True), ("q4_1", QT.Q4_1, True),
    ("q5_0", QT.Q5_0, True), ("q5_1", QT.Q5_1, True),
    ("q2_k", QT.Q2_K, False), ("q3_k", QT.Q3_K, False), ("q4_k", QT.Q4_K, False),
    ("q5_k", QT.Q5_K, False), ("q6_k", QT.Q6_K, False),
]

# Byte offsets of the f16 scale fields in each block (ggml-common.h).
F16_FIELDS = {
    QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q8_0: [0],
    QT.Q2_K: [80, 82], QT.Q3_K: [108], QT.Q4_K: [0, 2], QT.Q5_K: [0, 2], QT.Q6_K: [208],
}


def random_f16(rng, n):
    """Finite f16 scales: mostly normal values of either sign, some zero and
    subnormal ones."""
    v = (rng.standard_normal(n) * 0.05).astype(np.float16)
    kind = rng.integers(0, 16, n)
    v[kind == 0] = np.float16(0.0)
    sub = kind == 1
    v[sub] = (rng.integers(1, 1024, int(sub.sum())).astype(np.uint16)
              | np.uint16(0x8000) * rng.integers(0, 2, int(sub.sum())).astype(np.uint16)).view(np.float16)
    return v


def random_blocks(rng, qtype, nblocks):
    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (nblocks, ts), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        raw[:, off:off + 2] = random_f16(rng, nblocks).view(np.uint8).reshape(nblocks, 2)
    return raw


def plain_values(rng, n):
    v = rng.standard_normal(n).astype(np.float32) * 3
    v[:8] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-7, -3e-8, 65504.0]
    return v


def tensor_for(rng, qtype, quantizable):
    """@return : (raw array to store, ne-ordered shape description)"""
    if qtype in (QT.F32, QT.F16, QT.BF16):
        x = plain_values(rng, ROWS * PCOLS).reshape(ROWS, PCOLS)
        if qtype == QT.F32:
            return x, QT.F32
        if qtype == QT.F16:
            return x.astype(np.float16), QT.F16
        return quantize(x, QT.BF16), QT.BF16
    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    per_row = QCOLS // bs
    rows = []
    for r in range(ROWS):
        if quantizable and r < 2:
            x = (rng.standard_normal(QCOLS) * (r + 1)).astype(np.float32)
            x[:5] = [0.0, 1.0, -1.0, 0.5, -0.25]
            rows.append(quantize(x.reshape(1, QCOLS), qtype).reshape(per_row * ts))
        else:
            rows.append(random_blocks(rng, qtype, per_row).reshape(per_row * ts))
    return np.stack(rows).astype(np.uint8), qtype


def write_type_fixtures(out, rng):
    for name, qtype, quantizable in TYPES:
        raw, qt = tensor_for(rng, qtype, quantizable)
        w = gguf.GGUFWriter(os.path.join(out, name + ".gguf"), "fixture")
        w.add_string("fixture.type", name)
        if qt in (QT.F32, QT.F16):
            w.add_tensor("w", raw)
        else:
            w.add_tensor("w", raw, raw_dtype=qt)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        ref = dequantize(raw, qt).astype(np.float32)
        cols = PCOLS if qt in (QT.F32, QT.F16, QT.BF16) else QCOLS
        assert ref.shape == (ROWS, cols), (name, ref.shape)
        ref.astype("<f4").tofile(os.path.join(out, name + ".f32"))


def write_meta(out):
    w = gguf.GGUFWriter(os.path.join(out, "meta.gguf"), "fixture")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 3.25)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "h\u00e9llo, world")
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_uint64("t.u64small", 12345678901)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 2.5)
    w.add_key_value("t.arr_u8", [1, 2, 255], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT8)
    w.add_key_value("t.arr_i32", [-1, 0, 7, 2147483647], gguf.GGUFValueType.ARRAY,
                    sub_type=gguf.GGUFValueType.INT32)
    w.add_array("t.arr_f32", [0.5, -1.5])
    w.add_array("t.arr_str", ["a", "", "ccc"])
    w.add_array("t.arr_bool", [True, False])
    w.add_key_value("t.arr_f64", [1.25], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.FLOAT64)
    w.add_array("t.nested", [[1, 2], [3]])
    w.add_array("t.nested_str", [["x"], ["y", "zz"]])
    w.add_array("t.nested3", [[[1], [2, 3]], [[4]]])
    w.add_string("t.after", "end")
    w.add_tensor("a", np.arange(5, dtype=np.float32))
    w.add_tensor("b", np.array([[1, 2, 3], [-4, 0.5, 65504]], dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# The tiny Llama: hidden C, heads H, kv heads K, head dim D, intermediate F.
C, H, K, D, F, V, L = 32, 4, 2, 8, 40, 37, 2


def permute(w, n_head):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute: each head's rows go
    from Hugging Face's rotate_half order (first halves, then second halves)
    to interleaved pairs."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def save_safetensors(path, tensors, metadata):
    """safetensors.numpy.save_file orders __metadata__ differently from run
    to run; this writes the same format with a stable header (keys sorted,
    padded with spaces to a multiple of 8 as the reference does)."""
    header, off, blobs = {"__metadata__": metadata}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        blobs.append(a.tobytes())
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-(8 + len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def write_tiny_llama(out, rng):
    hf = {}

    def mat(name, rows, cols, scale=0.3):
        hf[name] = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    def vec(name, n, base=0.0):
        hf[name] = (base + rng.standard_normal(n) * 0.2).astype(np.float32)

    mat("model.embed_tokens.weight", V, C)
    for i in range(L):
        p = f"model.layers.{i}."
        vec(p + "input_layernorm.weight", C, 1.0)
        mat(p + "self_attn.q_proj.weight", H * D, C)
        vec(p + "self_attn.q_proj.bias", H * D)
        mat(p + "self_attn.k_proj.weight", K * D, C)
        vec(p + "self_attn.k_proj.bias", K * D)
        mat(p + "self_attn.v_proj.weight", K * D, C)
        vec(p + "self_attn.v_proj.bias", K * D)
        mat(p + "self_attn.o_proj.weight", C, H * D)
        vec(p + "self_attn.o_proj.bias", C)
        vec(p + "post_attention_layernorm.weight", C, 1.0)
        mat(p + "mlp.gate_proj.weight", F, C)
        mat(p + "mlp.up_proj.weight", F, C)
        mat(p + "mlp.down_proj.weight", C, F)
    vec("model.norm.weight", C, 1.0)
    mat("lm_head.weight", V, C)
    # what the GGUF holds: 2-D tensors in f16, so the truth is rounded too
    for k, v in hf.items():
        if v.ndim == 2:
            hf[k] = v.astype(np.float16).astype(np.float32)
    save_safetensors(os.path.join(out, "tiny-llama.safetensors"), hf,
                     {"kind": "gguf-llama-fixture", "version": "1"})

    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}

    def gguf_tensors(tied):
        t = {"token_embd.weight": hf["model.embed_tokens.weight"],
             "output_norm.weight": hf["model.norm.weight"]}
        if not tied:
            t["output.weight"] = hf["lm_head.weight"]
        for i in range(L):
            for src, dst in names.items():
                for kind in ("weight", "bias"):
                    key = f"model.layers.{i}.{src}.{kind}"
                    if key not in hf or (tied and kind == "bias"):
                        continue
                    x = hf[key]
                    if src == "self_attn.q_proj":
                        x = permute(x, H)
                    elif src == "self_attn.k_proj":
                        x = permute(x, K)
                    t[f"blk.{i}.{dst}.{kind}"] = x
        return t

    for fname, tied in (("tiny-llama.gguf", False), ("tiny-llama-tied.gguf", True)):
        w = gguf.GGUFWriter(os.path.join(out, fname), "llama")
        w.add_name("tiny-llama" + ("-tied" if tied else ""))
        w.add_block_count(L)
        w.add_context_length(64)
        w.add_embedding_length(C)
        w.add_feed_forward_length(F)
        w.add_head_count(H)
        w.add_head_count_kv(K)
        w.add_rope_freq_base(10000.0)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_vocab_size(V)
        w.add_rope_dimension_count(D)
        w.add_key_length(D)
        w.add_value_length(D)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        for name, x in gguf_tensors(tied).items():
            w.add_tensor(name, x.astype(np.float16) if x.ndim == 2 else x)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    try:
        from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor
    except ImportError:
        print("make-gguf-fixtures: transformers absent: permutation not cross-checked", file=sys.stderr)
        return
    proc = LlamaTensorProcessor()
    r = gguf.GGUFReader(os.path.join(out, "tiny-llama.gguf"))
    for t in r.tensors:
        if ".attn_q." in t.name or ".attn_k." in t.name:
            x = np.asarray(t.data).astype(np.float32).reshape(tuple(reversed(t.shape.tolist())))
            x = proc._reverse_permute_weights(x, H, H if ".attn_q." in t.name else K)
            i, kind = t.name.split(".")[1], t.name.split(".")[-1]
            src = "q_proj" if ".attn_q." in t.name else "k_proj"
            assert np.array_equal(x, hf[f"model.layers.{i}.self_attn.{src}.{kind}"]), t.name


def write_llama3_rope(out):
    """Metadata of the tiny Llama plus rope_freqs.weight as llama.cpp's
    converter computes it for rope_scaling llama3 (factor 8, low_freq_factor
    1, high_freq_factor 4, original_max_position_embeddings 64): with head
    dim 8 and theta 10000 the four frequencies fall one in the high band,
    one in the smooth band and two in the low band."""
    import math
    factor, low, high, orig = 8.0, 1.0, 4.0, 64
    freqs = 1.0 / (10000.0 ** (np.arange(0, D, 2, dtype=np.float32) / D))
    rf = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < orig / high:
            rf.append(1.0)
        elif wl > orig / low:
            rf.append(factor)
        else:
            smooth = (orig / wl - low) / (high - low)
            rf.append(1 / ((1 - smooth) / factor + smooth))
    assert 1.0 < rf[1] < factor and rf[0] == 1.0 and rf[3] == factor, rf
    w = gguf.GGUFWriter(os.path.join(out, "llama3-rope.gguf"), "llama")
    w.add_block_count(L)
    w.add_context_length(512)
    w.add_embedding_length(C)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(K)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(V)
    w.add_rope_dimension_count(D)
    w.add_tensor("rope_freqs.weight", np.array(rf, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/gguf"
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20250207)
    write_type_fixtures(out, rng)
    write_meta(out)
    write_tiny_llama(out, rng)
    write_llama3_rope(out)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"make-gguf-fixtures: wrote {len(os.listdir(out))} files, {total} bytes, to {out}")


if __name__ == "__main__":
    main()
