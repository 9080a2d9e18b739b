#!/usr/bin/env python3
"""PyTorch eager at the medium CPU shapes of omniflux-bench (docs/performance.md).

The same models as omniflux's bench cases, written as plain torch.nn.functional code the way the
reference implementations (diffusers, transformers) structure them: separate q/k/v projections,
F.scaled_dot_product_attention, a static KV cache for decoding (gpt-fast style). Random weights,
fp32, torch.inference_mode, the median of --iters runs after --warmup. Prints one JSON line per
measurement with the same case/metric names as omniflux-bench.

    ~/.cache/omniflux/torch-2.11.0/bin/python tools/dev/bench/eager.py --threads 2
"""
import argparse
import json
import math
import statistics
import time

import torch
import torch.nn.functional as F

ARGS = None


def timed(fn):
    for _ in range(ARGS.warmup):
        fn()
    ms = []
    for _ in range(max(1, ARGS.iters)):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ms)


def report(case, **kw):
    print(json.dumps({"case": case, "impl": "pytorch-eager", "torch": torch.__version__,
                      "threads": torch.get_num_threads(), **kw}), flush=True)


def W(*shape, std=None):
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    return torch.randn(*shape) * (std if std is not None else 1.0 / math.sqrt(fan_in))


def Lin(o, i, bias=True):
    return (W(o, i), torch.randn(o) * 0.02 if bias else None)


def lin(x, p):
    return F.linear(x, p[0], p[1])


def rms(x, w, eps=1e-6):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return h.to(x.dtype) * w if w is not None else h.to(x.dtype)


# ---- FLUX DiT (diffusers FluxTransformer2DModel) -------------------------------------------------

def rope_interleaved(x, cos, sin):  # x [B, H, L, D]; cos/sin [L, D] (pairs repeated)
    x2 = torch.stack((-x[..., 1::2], x[..., ::2]), -1).flatten(-2)
    return x * cos + x2 * sin


def flux_rope(ids, axes, theta=10000.0):  # ids [L, 3] -> cos, sin [L, sum(axes)]
    cos, sin = [], []
    for i, d in enumerate(axes):
        freqs = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
        ang = torch.outer(ids[:, i].double(), freqs)
        cos.append(ang.cos().repeat_interleave(2, -1).float())
        sin.append(ang.sin().repeat_interleave(2, -1).float())
    return torch.cat(cos, -1), torch.cat(sin, -1)


def timestep_embedding(t, dim=256):
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


class FluxDiT:
    def __init__(s, heads, head_dim, layers, single, joint, pooled, cin=64):
        D = heads * head_dim
        s.h, s.hd, s.D = heads, head_dim, D
        s.x_emb, s.ctx_emb = Lin(D, cin), Lin(D, joint)
        s.t1, s.t2, s.g1, s.g2 = Lin(D, 256), Lin(D, D), Lin(D, 256), Lin(D, D)
        s.p1, s.p2 = Lin(D, pooled), Lin(D, D)
        nrm = lambda: 1 + 0.1 * torch.randn(head_dim)
        s.double = [dict(n1=Lin(6 * D, D), n1c=Lin(6 * D, D), q=Lin(D, D), k=Lin(D, D), v=Lin(D, D), aq=Lin(D, D),
                         ak=Lin(D, D), av=Lin(D, D), nq=nrm(), nk=nrm(), naq=nrm(), nak=nrm(), out=Lin(D, D),
                         aout=Lin(D, D), ff0=Lin(4 * D, D), ff2=Lin(D, 4 * D), fc0=Lin(4 * D, D), fc2=Lin(D, 4 * D))
                    for _ in range(layers)]
        s.single = [dict(n=Lin(3 * D, D), q=Lin(D, D), k=Lin(D, D), v=Lin(D, D), nq=nrm(), nk=nrm(),
                         mlp=Lin(4 * D, D), out=Lin(D, 5 * D)) for _ in range(single)]
        s.norm_out, s.proj_out = Lin(2 * D, D), Lin(cin, D)

    def heads(s, x):
        return x.view(x.shape[0], x.shape[1], s.h, s.hd).transpose(1, 2)

    def forward(s, x, ctx, pooled, t, g, img_ids, txt_ids):
        ln = lambda y: F.layer_norm(y, (s.D,), eps=1e-6)
        temb = (lin(F.silu(lin(timestep_embedding(t * 1000), s.t1)), s.t2) +
                lin(F.silu(lin(timestep_embedding(g * 1000), s.g1)), s.g2) + lin(F.silu(lin(pooled, s.p1)), s.p2))
        st = F.silu(temb)
        x, ctx = lin(x, s.x_emb), lin(ctx, s.ctx_emb)
        cos, sin = flux_rope(torch.cat([txt_ids, img_ids]), [s.hd // 8, (s.hd - s.hd // 8) // 2, (s.hd - s.hd // 8) // 2])
        T = ctx.shape[1]
        for b in s.double:
            m, mc = lin(st, b["n1"]).chunk(6, 1), lin(st, b["n1c"]).chunk(6, 1)
            xn = ln(x) * (1 + m[1][:, None]) + m[0][:, None]
            cn = ln(ctx) * (1 + mc[1][:, None]) + mc[0][:, None]
            q = torch.cat([rms(s.heads(lin(cn, b["aq"])), b["naq"]), rms(s.heads(lin(xn, b["q"])), b["nq"])], 2)
            k = torch.cat([rms(s.heads(lin(cn, b["ak"])), b["nak"]), rms(s.heads(lin(xn, b["k"])), b["nk"])], 2)
            v = torch.cat([s.heads(lin(cn, b["av"])), s.heads(lin(xn, b["v"]))], 2)
            o = F.scaled_dot_product_attention(rope_interleaved(q, cos, sin), rope_interleaved(k, cos, sin), v)
            o = o.transpose(1, 2).flatten(2)
            x = x + m[2][:, None] * lin(o[:, T:], b["out"])
            x = x + m[5][:, None] * lin(F.gelu(lin(ln(x) * (1 + m[4][:, None]) + m[3][:, None], b["ff0"]), approximate="tanh"), b["ff2"])
            ctx = ctx + mc[2][:, None] * lin(o[:, :T], b["aout"])
            ctx = ctx + mc[5][:, None] * lin(F.gelu(lin(ln(ctx) * (1 + mc[4][:, None]) + mc[3][:, None], b["fc0"]), approximate="tanh"), b["fc2"])
        h = torch.cat([ctx, x], 1)
        for b in s.single:
            m = lin(st, b["n"]).chunk(3, 1)
            hn = ln(h) * (1 + m[1][:, None]) + m[0][:, None]
            q, k = rms(s.heads(lin(hn, b["q"])), b["nq"]), rms(s.heads(lin(hn, b["k"])), b["nk"])
            o = F.scaled_dot_product_attention(rope_interleaved(q, cos, sin), rope_interleaved(k, cos, sin), s.heads(lin(hn, b["v"])))
            mlp = F.gelu(lin(hn, b["mlp"]), approximate="tanh")
            h = h + m[2][:, None] * lin(torch.cat([o.transpose(1, 2).flatten(2), mlp], -1), b["out"])
        x = h[:, T:]
        sc, sh = lin(st, s.norm_out).chunk(2, 1)
        return lin(ln(x) * (1 + sc[:, None]) + sh[:, None], s.proj_out)


def bench_flux():
    heads, hd, width, txt = 4, 64, 512, 128
    m = FluxDiT(heads, hd, 2, 4, joint=128, pooled=64)
    n = (width // 16) ** 2
    side = width // 16
    r, c = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32), indexing="ij")
    img_ids = torch.stack([torch.zeros_like(r), r, c], -1).reshape(-1, 3)
    args = (torch.randn(1, n, 64), torch.randn(1, txt, 128), torch.randn(1, 64), torch.full((1,), 0.5),
            torch.full((1,), 3.5), img_ids, torch.zeros(txt, 3))
    ms = timed(lambda: m.forward(*args))
    report("flux_dit_forward", shape=f"D={heads * hd} blocks=2+4 {width}x{width} N={n} T={txt}", metric="forward",
           value=ms, unit="ms")


# ---- Qwen2 (transformers Qwen2ForCausalLM) with a static KV cache ---------------------------------

class Qwen2:
    def __init__(s, hidden, layers, heads, kv, inter, vocab, theta=1e6):
        s.H, s.h, s.kv, s.hd = hidden, heads, kv, hidden // heads
        s.embed = torch.randn(vocab, hidden)
        s.layers = [dict(ln1=torch.ones(hidden), ln2=torch.ones(hidden), q=Lin(heads * s.hd, hidden),
                         k=Lin(kv * s.hd, hidden), v=Lin(kv * s.hd, hidden), o=Lin(hidden, heads * s.hd, False),
                         gate=Lin(inter, hidden, False), up=Lin(inter, hidden, False), down=Lin(hidden, inter, False))
                    for _ in range(layers)]
        s.norm, s.head = torch.ones(hidden), Lin(vocab, hidden, False)
        s.inv_freq = 1.0 / theta ** (torch.arange(0, s.hd, 2, dtype=torch.float32) / s.hd)

    def new_cache(s, batch, cap):
        return [(torch.zeros(batch, s.kv, cap, s.hd), torch.zeros(batch, s.kv, cap, s.hd)) for _ in s.layers]

    def forward(s, ids, cache, start):
        B, S = ids.shape
        x = F.embedding(ids, s.embed)
        pos = torch.arange(start, start + S, dtype=torch.float32)
        emb = torch.cat([torch.outer(pos, s.inv_freq)] * 2, -1)
        cos, sin = emb.cos(), emb.sin()
        rot = lambda t: t * cos + torch.cat([-t[..., s.hd // 2:], t[..., : s.hd // 2]], -1) * sin
        for l, (kc, vc) in zip(s.layers, cache):
            h = rms(x, l["ln1"])
            q = rot(lin(h, l["q"]).view(B, S, s.h, s.hd).transpose(1, 2))
            k = rot(lin(h, l["k"]).view(B, S, s.kv, s.hd).transpose(1, 2))
            v = lin(h, l["v"]).view(B, S, s.kv, s.hd).transpose(1, 2)
            kc[:, :, start:start + S] = k
            vc[:, :, start:start + S] = v
            o = F.scaled_dot_product_attention(q, kc[:, :, :start + S], vc[:, :, :start + S], is_causal=S > 1,
                                               enable_gqa=True)
            x = x + lin(o.transpose(1, 2).reshape(B, S, -1), l["o"])
            h = rms(x, l["ln2"])
            x = x + lin(F.silu(lin(h, l["gate"])) * lin(h, l["up"]), l["down"])
        return lin(rms(x[:, -1:], s.norm), s.head)  # the last position, as omniflux's prefill


def bench_lm():
    hidden, layers, heads, kv, inter, vocab, prompt, new = 512, 4, 8, 2, 1408, 4096, 256, 64
    m = Qwen2(hidden, layers, heads, kv, inter, vocab)
    ids = torch.randint(0, vocab, (1, prompt))
    shape = dict(hidden=hidden, layers=layers, heads=heads, kv_heads=kv, inter=inter, vocab=vocab, batch=1, prompt=prompt)
    cache = m.new_cache(1, prompt + new)
    ms = timed(lambda: m.forward(ids, cache, 0))
    report("lm_prefill", shape=dict(shape, new=0), metric="prefill", value=prompt * 1000.0 / ms, unit="tok/s", ms=ms)
    first = m.forward(ids, cache, 0)[:, -1].argmax(-1)

    def decode():
        nxt = first
        for i in range(new):
            nxt = m.forward(nxt[:, None], cache, prompt + i)[:, -1].argmax(-1)

    ms = timed(decode)
    report("lm_decode", shape=dict(shape, new=new), metric="decode", ms_per_step=ms / new, value=new * 1000.0 / ms,
           unit="tok/s")


# ---- SigLIP vision tower (transformers SiglipVisionModel) -----------------------------------------

def encoder_layer(x, l, heads, act, mask=None, causal=False, eps=1e-6):
    B, L, D = x.shape
    h = F.layer_norm(x, (D,), l["ln1w"], l["ln1b"], eps)
    sp = lambda t: t.view(B, L, heads, D // heads).transpose(1, 2)
    o = F.scaled_dot_product_attention(sp(lin(h, l["q"])), sp(lin(h, l["k"])), sp(lin(h, l["v"])), attn_mask=mask, is_causal=causal)
    x = x + lin(o.transpose(1, 2).reshape(B, L, D), l["o"])
    h = F.layer_norm(x, (D,), l["ln2w"], l["ln2b"], eps)
    return x + lin(act(lin(h, l["fc1"])), l["fc2"])


def enc_weights(D, I, n):
    return [dict(ln1w=torch.ones(D), ln1b=torch.zeros(D), ln2w=torch.ones(D), ln2b=torch.zeros(D), q=Lin(D, D),
                 k=Lin(D, D), v=Lin(D, D), o=Lin(D, D), fc1=Lin(I, D), fc2=Lin(D, I)) for _ in range(n)]


def bench_siglip():
    image, patch, D, I, layers, heads = 256, 16, 256, 1024, 4, 4
    n = (image // patch) ** 2
    pw, pb, pos = W(D, 3, patch, patch), torch.randn(D) * 0.02, torch.randn(n, D) * 0.02
    ls = enc_weights(D, I, layers)
    post = (torch.ones(D), torch.zeros(D))
    px = torch.rand(1, 3, image, image) * 2 - 1

    def run():
        x = F.conv2d(px, pw, pb, stride=patch).flatten(2).transpose(1, 2) + pos
        for l in ls:
            x = encoder_layer(x, l, heads, lambda t: F.gelu(t, approximate="tanh"))
        return F.layer_norm(x, (D,), *post, 1e-6)

    ms = timed(run)
    report("siglip2_vision", shape=dict(image=image, batch=1, tokens=n, hidden=D, layers=layers), metric="forward",
           value=1000.0 / ms, unit="images/s", ms=ms)


# ---- CLIP-L text and T5 encoders (transformers) ---------------------------------------------------

def t5_bucket(rel, num_buckets=32, max_distance=128):
    num_buckets //= 2
    ret = (rel > 0).long() * num_buckets
    n = rel.abs()
    max_exact = num_buckets // 2
    large = max_exact + (torch.log(n.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact) *
                         (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return ret + torch.where(n < max_exact, n, large)


def bench_text():
    # CLIP: 256 wide, 4 layers, 4 heads, 77 tokens, causal, quick_gelu
    D, I, L = 256, 1024, 4
    tok, pos = torch.randn(49408, D), torch.randn(77, D)
    ls = enc_weights(D, I, L)
    fin = (torch.ones(D), torch.zeros(D))
    ids = torch.randint(0, 49406, (1, 77))

    def clip():
        x = F.embedding(ids, tok) + pos
        for l in ls:
            x = encoder_layer(x, l, 4, lambda t: t * torch.sigmoid(1.702 * t), causal=True, eps=1e-5)
        x = F.layer_norm(x, (D,), *fin, 1e-5)
        return x[torch.arange(1), ids.argmax(-1)]

    ms = timed(clip)
    report("flux_text_encoders", shape=f"CLIP hidden={D} layers={L} L=77", metric="clip_forward", value=ms, unit="ms")
    # T5: d_model 256, 4 heads of 64, d_ff 1024, 4 layers, gated-gelu, 128 tokens
    d, h, dkv, ff, L, n = 256, 4, 64, 1024, 4, 128
    shared = torch.randn(32128, d)
    bias_table = torch.randn(32, h)
    blocks = [dict(ln0=torch.ones(d), q=W(h * dkv, d, std=1 / math.sqrt(d * dkv)), k=W(h * dkv, d), v=W(h * dkv, d),
                   o=W(d, h * dkv), ln1=torch.ones(d), wi0=W(ff, d), wi1=W(ff, d), wo=W(d, ff)) for _ in range(L)]
    fin_t5 = torch.ones(d)
    tids = torch.randint(0, 32000, (1, n))

    def t5():
        x = F.embedding(tids, shared)
        ctx = torch.arange(n)[:, None]
        bias = F.embedding(t5_bucket(torch.arange(n)[None, :] - ctx), bias_table).permute(2, 0, 1)[None]
        sp = lambda t: t.view(1, n, h, dkv).transpose(1, 2)
        for b in blocks:
            y = rms(x, b["ln0"])
            o = F.scaled_dot_product_attention(sp(F.linear(y, b["q"])), sp(F.linear(y, b["k"])), sp(F.linear(y, b["v"])),
                                               attn_mask=bias, scale=1.0)
            x = x + F.linear(o.transpose(1, 2).reshape(1, n, -1), b["o"])
            y = rms(x, b["ln1"])
            x = x + F.linear(F.gelu(F.linear(y, b["wi0"]), approximate="tanh") * F.linear(y, b["wi1"]), b["wo"])
        return rms(x, fin_t5)

    ms = timed(t5)
    report("flux_text_encoders", shape=f"T5 d_model={d} layers={L} L={n}", metric="t5_forward", value=ms, unit="ms")


# ---- FLUX VAE decoder (diffusers AutoencoderKL) ---------------------------------------------------

def bench_vae():
    ch, groups, lpb, latent, side = [32, 64, 64, 64], 16, 2, 16, 256

    def conv(o, i, k):
        return (W(o, i, k, k), torch.randn(o) * 0.02)

    def resnet(i, o):
        return dict(n1=(torch.ones(i), torch.zeros(i)), c1=conv(o, i, 3), n2=(torch.ones(o), torch.zeros(o)),
                    c2=conv(o, o, 3), sc=conv(o, i, 1) if i != o else None)

    def run_resnet(x, r):
        h = F.conv2d(F.silu(F.group_norm(x, groups, *r["n1"], 1e-6)), *r["c1"], padding=1)
        h = F.conv2d(F.silu(F.group_norm(h, groups, *r["n2"], 1e-6)), *r["c2"], padding=1)
        return (F.conv2d(x, *r["sc"]) if r["sc"] else x) + h

    c = ch[-1]
    conv_in = conv(c, latent, 3)
    mid = [resnet(c, c), resnet(c, c)]
    attn = dict(n=(torch.ones(c), torch.zeros(c)), q=Lin(c, c), k=Lin(c, c), v=Lin(c, c), o=Lin(c, c))
    rev = ch[::-1]
    ups = []
    for i, co in enumerate(rev):
        ci = rev[0] if i == 0 else rev[i - 1]
        ups.append(dict(res=[resnet(ci if j == 0 else co, co) for j in range(lpb + 1)],
                        up=conv(co, co, 3) if i + 1 < len(rev) else None))
    norm_out, conv_out = (torch.ones(ch[0]), torch.zeros(ch[0])), conv(3, ch[0], 3)
    z = torch.randn(1, latent, side // 8, side // 8)

    def run():
        x = F.conv2d(z, *conv_in, padding=1)
        x = run_resnet(x, mid[0])
        B, C, H, Wd = x.shape
        s = F.group_norm(x, groups, *attn["n"], 1e-6).view(B, C, H * Wd).transpose(1, 2)
        o = F.scaled_dot_product_attention(lin(s, attn["q"])[:, None], lin(s, attn["k"])[:, None], lin(s, attn["v"])[:, None])[:, 0]
        x = lin(o, attn["o"]).transpose(1, 2).reshape(B, C, H, Wd) + x
        x = run_resnet(x, mid[1])
        for u in ups:
            for r in u["res"]:
                x = run_resnet(x, r)
            if u["up"]:
                x = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), *u["up"], padding=1)
        return F.conv2d(F.silu(F.group_norm(x, groups, *norm_out, 1e-6)), *conv_out, padding=1)

    ms = timed(run)
    report("flux_vae_decode", shape=f"channels={ch[0]}..{ch[-1]} {side}x{side}", metric="decode", value=ms, unit="ms")


CASES = {"flux": bench_flux, "lm": bench_lm, "siglip": bench_siglip, "text": bench_text, "vae": bench_vae}

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cases", nargs="*", default=list(CASES), help="of " + ", ".join(CASES))
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all cores)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    ARGS = p.parse_args()
    torch.set_num_threads(ARGS.threads or torch.get_num_threads())
    torch.manual_seed(0)
    with torch.inference_mode():
        for c in ARGS.cases:
            CASES[c]()
