#!/usr/bin/env python3
"""
Times flash-linear-attention's chunked kernels at the points of `test_ssd_scan --sweep` (tests/gpu/
test_ssd_scan.cu) and writes its CSV columns to stdout, so scripts/scan_sweep_report.py can set the two
side by side (results/scan-sweep). Needs a GPU, torch, triton, einops and the fla-core wheel, which
scripts/bench_scan_sweep.sh installs from .whl/ (fetched on a machine with the package index, from the
repository root: python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
-d .whl fla-core flash-linear-attention; fla-core holds fla.ops, the other its layers and models).

One SSD layer is a gated linear attention, per sequence and head, with keys of width K = N (d_state) and
values of width V = P (headdim):
    q_t = C_t,  k_t = B_t,  v_t = delta_t x_t,  g_t = delta_t A          (g: the step's log decay)
    S_t = exp(g_t) (.) S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t             (scale 1: SSD has no 1/sqrt(K))
  fla.ops.gla.chunk_gla                 g [B, T, H, K]: a decay per (step, head, key), the diagonal A
  fla.ops.simple_gla.chunk_simple_gla   g [B, T, H]:    a decay per (step, head), the scalar A
Both take [B, T, H, .] tensors (not head-first), a per-step natural-log decay (they form its cumulative
sums inside) and chunks of 64 steps. The inputs are formed before the timing: B and C copied to every head
(fla takes them per head), v = delta x and g = delta A in fp32; our scan does these parts, and the D x skip
term, inside its time. fla's own outputs and gradients are all it computes (no gradient into delta or A).

Timing, as test_ssd_scan's: the forward with autograd recording (inputs that need gradients, as in
training), and forward + backward (torch.autograd.grad of the output against dy), CUDA events around each,
the median of the timed runs after a warm-up of a fifth of them (at least 2); 30 runs up to T = 8192, 20 at
16384, 10 beyond. The first run's output and gradients must be finite. A point that fails (out of memory, a
shape the kernel refuses) gets a row saying why.

Mapping check: before timing, each kernel's output at B 1, T 200 (not a multiple of 64) and the first --n must match
the recurrence above run step by step in fp32 on the same bf16 inputs within 3e-2 of its largest value:
fla keeps the chunk states and the products' operands in bf16 (a few roundings of 2^-9 each, under
1e-2), while a wrong scale (1/sqrt(N)) or log base would be off by 25% or more. A kernel that fails it
is still timed, its rows' status saying so.

Compiling and autotuning: fla's Triton kernels are compiled and autotuned (each config timed) on their
first call per key width K, which takes minutes per kernel and N. --warm runs one forward + backward per
kernel and N and writes no CSV: run in parallel processes (one per kernel and N, FLA_CACHE_RESULTS=0 so
that no choice made on a shared GPU is kept), they fill Triton's compile cache; the timing process, alone
on the GPU, then autotunes from compiled kernels and keeps its choices (scripts/bench_scan_sweep.sh).

Rates: the FLOP and byte model of test_ssd_scan --sweep (bench_sweep's comment), here with fla's chunk
size Q = 64 (so fla's intra-chunk products count a quarter of ours at Q = 256: compare times, not rates,
across implementations); fla moves more bytes than the model: per-head copies of B and C, a decay per key.

  python3 scripts/bench_scan_fla.py [--kernels gla,simple_gla] [--n 16,64,128,256] [--t-max 65536] [--warm] > fla.csv
"""
import argparse
import sys

H, P, G, TOKENS = 24, 64, 1, 16384
COLUMNS = ("precision,series,path,a,B,T,H,P,N,Q,iters,fwd_ms,fwd_bwd_ms,fwd_tflops,fwd_bwd_tflops,fwd_gbps,"
           "fwd_bwd_gbps,status")
KERNELS = {"gla": ("fla-gla", "diagonal"), "simple_gla": ("fla-simple-gla", "scalar")}
MAPPING_TOLERANCE = 3e-2


def scan_cost(B, T, N, Q, elem=2):
    """(forward FLOPs, backward FLOPs, forward bytes, backward bytes): test_ssd_scan's scan_cost."""
    full, rest = divmod(T, Q)
    chunks, pairs = full + (rest > 0), full * Q * (Q + 1) / 2 + rest * (rest + 1) / 2
    fwd = B * H * (4 * T * P * N + 2 * P * N * chunks + 2 * (N + P) * pairs)
    xbc, y, rows = H * P + 2 * G * N, H * P, B * T
    return fwd, 2 * fwd, rows * (xbc + H + y) * elem, rows * (2 * xbc + 2 * H + y) * elem


def iterations(T):
    return 30 if T <= 8192 else 20 if T <= 16384 else 10


def csv_row(path, a, B, T, N, Q, iters, times, status):
    cells = ["bf16", "sweep", path, a, B, T, H, P, N, Q, iters]
    if times:
        fwd, both = times
        f_fwd, f_bwd, b_fwd, b_bwd = scan_cost(B, T, N, Q)
        cells += [f"{fwd:.4f}", f"{both:.4f}", f"{f_fwd / fwd * 1e-9:.2f}", f"{(f_fwd + f_bwd) / both * 1e-9:.2f}",
                  f"{b_fwd / fwd * 1e-6:.1f}", f"{(b_fwd + b_bwd) / both * 1e-6:.1f}"]
    else:
        cells += [""] * 6
    cells.append(status.replace(",", ";").replace("\n", " ")[:200])
    return ",".join(str(c) for c in cells)


def inputs(torch, kernel, B, T, N, seed):
    """q, k, v, g of one SSD layer (delta ~ softplus(-4 + N(0, 1)), A = -(1 + 15 u)), needing gradients, and dy"""
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def normal(*shape):
        return torch.randn(*shape, generator=gen, device="cuda")

    delta = torch.nn.functional.softplus(normal(B, T, H) - 4.0)
    Bm, Cm, x = normal(B, T, 1, N), normal(B, T, 1, N), normal(B, T, H, P)
    u = torch.rand(H, N if kernel == "gla" else 1, generator=gen, device="cuda")
    A = -(1.0 + 15.0 * u)
    g = delta[..., None] * A if kernel == "gla" else delta * A[:, 0]
    q = Cm.expand(B, T, H, N).to(torch.bfloat16).contiguous()
    k = Bm.expand(B, T, H, N).to(torch.bfloat16).contiguous()
    v = (delta[..., None] * x).to(torch.bfloat16)
    tensors = [t.requires_grad_() for t in (q, k, v, g.float().contiguous())]
    return tensors, normal(B, T, H, P).to(torch.bfloat16)


def time_point(torch, fn, tensors, dy, iters):
    """Median ms of the forward and of forward + backward; raises on a non-finite output or gradient"""
    q, k, v, g = tensors
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fwd, both = [], []
    warmup = max(2, iters // 5)
    for it in range(warmup + iters):
        start.record()
        o = fn(q, k, v, g)
        stop.record()
        torch.cuda.synchronize()
        if it >= warmup:
            fwd.append(start.elapsed_time(stop))
        del o
        start.record()
        o = fn(q, k, v, g)
        grads = torch.autograd.grad(o, tensors, dy)
        stop.record()
        torch.cuda.synchronize()
        if it == 0:
            bad = [name for name, t in zip(("o", "dq", "dk", "dv", "dg"), (o, *grads)) if not torch.isfinite(t).all()]
            if bad:
                raise FloatingPointError("non-finite " + " ".join(bad))
        if it >= warmup:
            both.append(start.elapsed_time(stop))
        del o, grads
    return sorted(fwd)[len(fwd) // 2], sorted(both)[len(both) // 2]


def mapping_error(torch, kernel, fn, N):
    """Largest difference of fn's output to the fp32 recurrence, relative to the largest output value"""
    (q, k, v, g), _ = inputs(torch, kernel, 1, 200, N, seed=7)
    with torch.no_grad():
        o = fn(q, k, v, g).float()
        qf, kf, vf = q.float(), k.float(), v.float()
        decay = torch.exp(g if kernel == "gla" else g[..., None].expand_as(qf))
        S = torch.zeros(1, H, N, P, device="cuda")
        ref = torch.empty_like(o)
        for t in range(qf.shape[1]):
            S = decay[:, t, :, :, None] * S + kf[:, t, :, :, None] * vf[:, t, :, None, :]
            ref[:, t] = torch.einsum("bhk,bhkv->bhv", qf[:, t], S)
    return ((o - ref).abs().max() / ref.abs().max()).item()


def kernel_function(kernel):
    if kernel == "gla":
        from fla.ops.gla import chunk_gla
        return lambda q, k, v, g: chunk_gla(q, k, v, g, scale=1.0)[0]
    from fla.ops.simple_gla import chunk_simple_gla
    return lambda q, k, v, g: chunk_simple_gla(q, k, v, g=g, scale=1.0)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", default="gla,simple_gla", help="comma list of gla, simple_gla")
    parser.add_argument("--n", default="16,64,128,256", help="comma list of d_state values")
    parser.add_argument("--t-max", type=int, default=65536, help="the longest T (from 512, doubling)")
    parser.add_argument("--warm", action="store_true", help="compile and autotune only: one forward + backward "
                        "per kernel and N at T 512, no CSV")
    args = parser.parse_args()
    kernels = args.kernels.split(",")
    for kernel in kernels:
        if kernel not in KERNELS:
            sys.exit(f"error: --kernels: '{kernel}' is not one of {', '.join(KERNELS)}")
    try:
        Ns = [int(n) for n in args.n.split(",")]
    except ValueError:
        sys.exit(f"error: --n: '{args.n}' is not a comma list of integers")
    Ts = [T for T in (512 << i for i in range(8)) if T <= args.t_max]
    if args.warm:
        import torch
        for kernel in kernels:
            for N in Ns:
                tensors, dy = inputs(torch, kernel, TOKENS // 512, 512, N, seed=N)
                torch.autograd.grad(kernel_function(kernel)(*tensors), tensors, dy)
                torch.cuda.synchronize()
        return
    print(COLUMNS, flush=True)
    try:
        import torch
        import fla
        functions = {kernel: kernel_function(kernel) for kernel in kernels}
        print(f"fla {fla.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name()}", file=sys.stderr)
        setup_error = None
    except Exception as e:  # every row then says why nothing ran
        setup_error = f"fla not usable: {type(e).__name__}: {e}"
    for kernel in kernels:
        path, a = KERNELS[kernel]
        ok = "ok"
        if not setup_error:
            try:
                err = mapping_error(torch, kernel, functions[kernel], Ns[0])
                print(f"mapping check {path} N={Ns[0]}: relative error {err:.2e} (tolerance {MAPPING_TOLERANCE:.0e})",
                      file=sys.stderr)
                if not err <= MAPPING_TOLERANCE:  # a NaN fails too
                    ok = f"ok but the mapping check failed (relative error {err:.2e})"
            except Exception as e:
                ok = f"ok but the mapping check did not run ({type(e).__name__}: {e})"
        for N in Ns:
            for T in Ts:
                B, iters = max(1, TOKENS // T), iterations(T)
                if setup_error:
                    print(csv_row(path, a, B, T, N, 64, 0, None, setup_error), flush=True)
                    continue
                try:
                    tensors, dy = inputs(torch, kernel, B, T, N, seed=T + N)
                    times = time_point(torch, functions[kernel], tensors, dy, iters)
                    row = csv_row(path, a, B, T, N, 64, iters, times, ok)
                except Exception as e:  # out of memory, a shape the kernel refuses, a non-finite result
                    row = csv_row(path, a, B, T, N, 64, 0, None, f"failed: {type(e).__name__}: {e}")
                tensors = dy = None
                torch.cuda.empty_cache()
                print(row, flush=True)


if __name__ == "__main__":
    main()
