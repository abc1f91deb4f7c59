"""Training-step throughput of model/llama.py on CPU, against Hugging Face's LlamaForCausalLM.

One process, float32, one step = forward + backward + AdamW step (same optimiser settings for
every variant). Variants are timed ALTERNATELY (round-robin, several rounds) so that load from
other processes on a shared machine hits all of them alike; the median round is reported.
MFU = tokens/s * flops_per_token (model.presets: 6(N - N_emb) + 12·L·d·T) / peak, where peak is
the best fp32 torch.matmul of large square matrices measured in the same run.

    python bench/bench_model_cpu.py            # tiny and small, writes bench/results/model_cpu.md
    python bench/bench_model_cpu.py --quick    # fewer rounds and steps, same output file
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.llama import Transformer, compile_blocks  # noqa: E402
from model.presets import flops_per_token, get_preset  # noqa: E402
from bench.machine import cpu_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "model_cpu.md"


def matmul_peak_flops(n: int = 2048, reps: int = 8) -> tuple[float, float]:
    """Best-of-reps fp32 (n x n) @ (n x n) matmul: the CPU's practical peak, as FLOP per
    wall-clock second and FLOP per CPU second (all threads' CPU time summed)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best_wall = best_cpu = float("inf")
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.matmul(a, b)
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return 2 * n**3 / best_wall, 2 * n**3 / best_cpu


def build_tally(args, compiled: bool):
    torch.manual_seed(0)
    model = Transformer(args)
    if compiled:
        compile_blocks(model)

    def loss_fn(x, y):
        return model(x, y)

    return model, loss_fn


def build_hf(args):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=args.vocab_size, hidden_size=args.dim, intermediate_size=args.ffn_hidden,
        num_hidden_layers=args.n_layers, num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_heads, max_position_embeddings=args.max_seq_len,
        rms_norm_eps=args.norm_eps, rope_theta=args.rope_theta, tie_word_embeddings=False,
        attn_implementation="sdpa", torch_dtype=torch.float32,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).float()
    model.config.use_cache = False

    def loss_fn(x, y):
        # HF shifts labels itself: feed it the (T+1)-long window's first T tokens as labels' base.
        return model(input_ids=x, labels=x).loss

    return model, loss_fn


def make_step(model, loss_fn):
    # fused=True: one pass over the parameters (6x faster than foreach on this CPU); the same
    # optimiser for every variant, so the comparison is the model's.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=True)

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, y)
        loss.backward()
        opt.step()
        return loss

    return step


class Peak:
    """The matmul peak, re-measured between rounds; the best figure seen is kept, so that a
    moment of contention never inflates MFU (the highest peak gives the lowest MFU)."""

    def __init__(self):
        self.wall = self.cpu = 0.0
        self.samples: list[float] = []

    def measure(self) -> None:
        wall, cpu = matmul_peak_flops()
        self.samples.append(wall)
        self.wall, self.cpu = max(self.wall, wall), max(self.cpu, cpu)


def bench_preset(name, batch, seq, rounds, steps, warmup, variants, peak: Peak):
    preset = get_preset(name)
    args = preset.args
    seq = seq or preset.seq_len
    fpt = flops_per_token(args, seq)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, args.vocab_size, (batch, seq), generator=g)
    y = torch.randint(0, args.vocab_size, (batch, seq), generator=g)
    steps_fns = {}
    for v in variants:
        model, loss_fn = build_hf(args) if v == "hf" else build_tally(args, v == "tally+compile")
        steps_fns[v] = make_step(model, loss_fn)
        t0 = time.perf_counter()
        for _ in range(warmup):  # first call compiles (inductor) / warms allocators
            steps_fns[v](x, y)
        print(f"  {name} {v}: warm-up {time.perf_counter() - t0:.1f} s", flush=True)
    per_round: dict[str, list[float]] = {v: [] for v in variants}
    per_cpu_s: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(rounds):
        for v in variants:
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                steps_fns[v](x, y)
            per_round[v].append(batch * seq * steps / (time.perf_counter() - t0))
            per_cpu_s[v].append(batch * seq * steps / (time.process_time() - c0))
        peak.measure()
        print(f"  {name} round {r + 1}: " + ", ".join(f"{v} {per_round[v][-1]:.0f} tok/s"
                                                      for v in variants), flush=True)
    rows = []
    for v in variants:
        med = statistics.median(per_round[v])
        rows.append({"preset": name, "variant": v, "batch": batch, "seq": seq,
                     "tokens_per_s": med, "best_tokens_per_s": max(per_round[v]),
                     "spread": (max(per_round[v]) - min(per_round[v])) / med,
                     "flops_per_token": fpt, "tokens_per_cpu_s": max(per_cpu_s[v])})
    hf = next((r for r in rows if r["variant"] == "hf"), None)
    for r in rows:
        r["vs_hf"] = r["tokens_per_s"] / hf["tokens_per_s"] if hf else float("nan")
        r["vs_hf_cpu"] = r["tokens_per_cpu_s"] / hf["tokens_per_cpu_s"] if hf else float("nan")
    return rows, fpt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="tiny,small")
    p.add_argument("--batch", type=int, default=0, help="sequences per step (default: tiny 8, small 4)")
    p.add_argument("--seq", type=int, default=0, help="sequence length (default: the preset's)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="steps per variant per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--variants", default="tally,tally+compile,hf")
    p.add_argument("--quick", action="store_true", help="3 rounds of 1 step, 1 warm-up step")
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    if a.quick:
        a.rounds, a.steps, a.warmup = 3, 1, 1
    torch.set_num_threads(a.threads)
    variants = a.variants.split(",")
    load_before = os.getloadavg()
    peak = Peak()
    peak.measure()
    print(f"fp32 matmul peak {peak.wall / 1e9:.0f} GFLOP/s, {a.threads} threads", flush=True)
    all_rows = []
    for name in a.presets.split(","):
        batch = a.batch or {"tiny": 8, "small": 4}.get(name, 1)
        rows, fpt = bench_preset(name, batch, a.seq, a.rounds, a.steps, a.warmup, variants, peak)
        all_rows += rows
    peak.measure()
    for r in all_rows:  # against the best peak of the whole run
        r["mfu"] = r["tokens_per_s"] * r["flops_per_token"] / peak.wall
        r["cpu_mfu"] = r["tokens_per_cpu_s"] * r["flops_per_token"] / peak.cpu
    write_results(a, all_rows, peak, load_before, os.getloadavg())
    return 0


def write_results(a, rows, peak: Peak, load_before, load_after) -> None:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    import transformers

    lines = [
        "# model/llama.py training-step throughput on CPU",
        "",
        f"Written by `python bench/bench_model_cpu.py {' '.join(sys.argv[1:])}` on {now}.",
        "",
        f"- machine: {platform.platform()}, CPU {cpu_model()}, {os.cpu_count()} cores, "
        f"{a.threads} torch threads",
        f"- torch {torch.__version__}, transformers {transformers.__version__}, python "
        f"{platform.python_version()}",
        f"- fp32 matmul peak (2048² @ 2048², best of 8, re-measured after every round): "
        f"{peak.wall / 1e9:.0f} GFLOP/s, the best of {len(peak.samples)} measurements "
        f"(lowest {min(peak.samples) / 1e9:.0f}); MFU is against the best",
        f"- per CPU-second (all threads' CPU time, `time.process_time`): {peak.cpu / 1e9:.0f} "
        "GFLOP per CPU-s; `CPU-MFU` is tokens per CPU-s x FLOPs per token against it. It is "
        "much less sensitive to other processes than wall-clock time (best round)",
        f"- load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
        "(the machine is shared; spread = (best - worst round) / median)",
        f"- {a.rounds} rounds x {a.steps} steps per variant, timed alternately, "
        f"after {a.warmup} warm-up steps; one step = forward + backward + AdamW (fp32)",
        "",
        "| preset | variant | batch x seq | tokens/s (median) | best | spread | MFU | vs HF "
        "| tokens/CPU-s | CPU-MFU | vs HF (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['variant']} | {r['batch']} x {r['seq']} | "
            f"{r['tokens_per_s']:.0f} | {r['best_tokens_per_s']:.0f} | {r['spread']:.0%} | "
            f"{r['mfu']:.1%} | {r['vs_hf']:.2f}x | {r['tokens_per_cpu_s']:.0f} | "
            f"{r['cpu_mfu']:.1%} | {r['vs_hf_cpu']:.2f}x |"
        )
    lines += [
        "",
        "Variants: `tally` = model/llama.py eager; `tally+compile` = the same after "
        "`compile_blocks(model)` (torch.compile per block, inductor); `hf` = transformers' "
        "`LlamaForCausalLM` with the same dims, layers, heads, FFN size, vocabulary, sequence "
        "length and batch, `attn_implementation=\"sdpa\"`, untied embeddings.",
        "",
    ]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists() and "\n## Notes" in out.read_text():  # hand-written notes survive a rerun
        lines.append("## Notes" + out.read_text().split("\n## Notes", 1)[1].rstrip() + "\n")
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(out)
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
