"""``attnlab bench gpu``: the attention core on a CUDA device, against torch's own fused SDPA
measured in the same run.

Rows: ``attention()`` with each exact backend (``auto``, ``sdpa``, ``tiled``, ``math``) and
the ``linear`` one, for full, causal and sliding-window masks, forward and forward + backward,
in float16 / bfloat16 / float32, against ``F.scaled_dot_product_attention`` given the same
mask (``is_causal`` for causal, the dense boolean mask otherwise). Figures are time and peak
memory ratios against that reference, so they compare across GPUs. A second table gives the
cost of recording every map of a 6-layer encoder (``record_attention``) against its fused
forward. Results go to ``attnlab/bench/results/gpu.json``.

Needs a CUDA device: without one it says so and exits with status 2 (``--device cpu`` runs
the same rows on the CPU, as a smoke test).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from attnlab.core import masks as M
from attnlab.core.attention import attention
from attnlab.core.blocks import TransformerEncoder
from attnlab.core.capture import record_attention
from attnlab.core.timing import measure

__all__ = ["main"]

RESULTS = Path(__file__).parent / "results"
MASKS = ("full", "causal", "window_256")
BACKENDS = ("auto", "sdpa", "tiled", "math", "linear")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
B, H, D = 4, 16, 64
MEMORY = [True]  # --no-memory turns the peak-memory calls off


def _mask(name: str) -> M.Mask | None:
    return {"full": None, "causal": M.causal(), "window_256": M.sliding_window(256)}[name]


def _case(backend: str, mask: str, L: int, dtype: torch.dtype, bwd: bool, dev: str):
    g = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(B, H, L, D, generator=g, device=dev, dtype=dtype) for _ in range(3))
    for t in (q, k, v):
        t.requires_grad_(bwd)
    spec = _mask(mask)
    dense = None if spec is None or mask == "causal" else spec.dense(L, L).to(dev)

    def fwd():
        if backend == "torch":
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=dense, is_causal=mask == "causal"
            )
        return attention(q, k, v, mask=spec, backend=backend)

    def run():
        out = fwd()
        if bwd:
            out.backward(torch.ones_like(out))
            for t in (q, k, v):
                t.grad = None
        return None

    return run


def attention_rows(lengths, dtypes, dev: str, budget_s: float) -> list[dict]:
    rows = []
    for dname in dtypes:
        for mask in MASKS:
            for L in lengths:
                for bwd in (False, True):
                    ref = measure(
                        _case("torch", mask, L, DTYPES[dname], bwd, dev),
                        budget_s=budget_s,
                        device=dev,
                        memory=MEMORY[0],
                    )
                    for backend in BACKENDS:
                        if backend == "math" and L > 4096:
                            continue  # materialises B·H·L² scores
                        if backend == "linear" and mask != "full" and mask != "causal":
                            continue
                        try:
                            m = measure(
                                _case(backend, mask, L, DTYPES[dname], bwd, dev),
                                budget_s=budget_s,
                                device=dev,
                                memory=MEMORY[0],
                            )
                        except (RuntimeError, ValueError) as e:  # out of memory, unsupported
                            rows.append(
                                dict(
                                    dtype=dname,
                                    mask=mask,
                                    L=L,
                                    bwd=bwd,
                                    backend=backend,
                                    error=str(e)[:120],
                                )
                            )
                            torch.cuda.empty_cache()
                            continue
                        rows.append(dict(
                            dtype=dname, mask=mask, L=L, bwd=bwd, backend=backend,
                            ms=1e3 * m.best, torch_ms=1e3 * ref.best,
                            time_ratio=m.best / ref.best,
                            peak_mb=_mb(m), torch_peak_mb=_mb(ref),
                        ))  # fmt: skip
                        print(_line(rows[-1]), flush=True)
    return rows


def recording_rows(lengths, dev: str, budget_s: float) -> list[dict]:
    rows = []
    for L in lengths:
        torch.manual_seed(0)
        model = TransformerEncoder(384, 6, 6, causal=True).to(dev).eval()
        x = torch.randn(1, L, 384, device=dev)

        def plain(model=model, x=x):
            with torch.no_grad():
                model(x)

        def record(model=model, x=x):
            with torch.no_grad(), record_attention(model):
                model(x)

        a = measure(plain, budget_s=budget_s, device=dev, memory=MEMORY[0])
        b = measure(record, budget_s=budget_s, device=dev, memory=MEMORY[0])
        rows.append(
            dict(
                L=L,
                fused_ms=1e3 * a.best,
                record_ms=1e3 * b.best,
                ratio=b.best / a.best,
                record_peak_mb=_mb(b),
            )
        )
        print(f"record L={L}: {rows[-1]['ratio']:.2f}x fused", flush=True)
    return rows


def _mb(m) -> float | None:
    return None if m.peak_bytes is None else m.peak_bytes / 2**20


def _line(r: dict) -> str:
    what = f"{r['dtype']} {r['mask']:>10} L={r['L']:>5} {'fwd+bwd' if r['bwd'] else 'fwd'}"
    return f"{what:<34} {r['backend']:>6}: {r['time_ratio']:.2f}x torch ({r['ms']:.2f} ms)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="attnlab bench gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", default="1024,4096,16384")
    p.add_argument("--dtypes", default="bf16,fp32", help=f"from {','.join(DTYPES)}")
    p.add_argument("--budget", type=float, default=1.0, help="seconds of timed runs per case")
    p.add_argument("--out", default=str(RESULTS / "gpu.json"))
    p.add_argument("--device", default="cuda", help="cuda (default), or cpu for a smoke run")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory calls")
    p.add_argument("--models", default="256,1024,4096", help="L of the recording rows")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "attnlab bench gpu needs a CUDA device, and torch sees none here; run "
            "`attnlab bench core` for the CPU figures.",
            file=sys.stderr,
        )
        return 2
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in DTYPES]
    if bad:
        p.error(f"unknown dtype {bad[0]!r}; valid: {', '.join(DTYPES)}")
    lengths = [int(x) for x in args.lengths.split(",")]
    dev = args.device
    MEMORY[0] = not args.no_memory
    result = dict(
        device=torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu",
        torch=torch.__version__, B=B, H=H, D=D,
        command="attnlab bench gpu " + " ".join(argv if argv is not None else sys.argv[1:]),
        attention=attention_rows(lengths, dtypes, dev, args.budget),
        recording=recording_rows([int(x) for x in args.models.split(",")], dev, args.budget),
    )  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
