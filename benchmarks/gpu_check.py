"""The prepared GPU check (issue 14): one run on a CUDA machine, everything it prints kept.

usage: bash benchmarks/gpu_check.sh [--out DIR] [--dry-run]      (or OUT=DIR bash ...)

Needs only what a bare GPU machine has: torch, numpy, scipy, scikit-learn, pandas, tqdm; no
papermill, no offline datasets (digits is embedded, ``synthetic_cifar`` is generated).  Parts:

1. the machine: torch, the device, and the bf16 and fp32 matmul ceilings it measures first;
2. both engines on the device: a digits collection learns on each; the stacked engine killed
   after epoch 2 resumes to the uninterrupted predictions; bf16 tracks fp32;
3. the stacked engine against the plain loop (members one after another, the loop engine),
   small st-VGG and st-VGG at N = 10 and 100, fp32 and bf16, one epoch of 5000 CIFAR-shaped
   images each: member-epochs per second, the ratio, achieved TFLOP/s against the bf16
   ceiling, peak memory (target: stacked >= 10x the loop at N=100 small st-VGG, bf16);
4. a paper-scale collection smoke: N=100 st-VGG, two short epochs, through train_collection.

``--dry-run`` runs every part on the CPU at toy sizes (CUDA-only measurements skipped, with a
message), so the script is known to work before it meets a GPU.  Results: DIR/gpu_check.json
and the printed log (DIR/gpu_check.log via the shell wrapper).
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout, installed or not

from agreebook.config import Runtime, TrainConfig  # noqa: E402
from agreebook.engines.loop import train_member  # noqa: E402
from agreebook.engines.stacked import train_group  # noqa: E402
from agreebook.member import Checkpoint, make_jobs  # noqa: E402
from agreebook.prepare import TrainingData, prepare_dataset  # noqa: E402
from agreebook.train import train_collection  # noqa: E402

RESULTS = {}


def say(*a):
    print(*a, flush=True)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ceiling(device, dtype, n):
    """Median TFLOP/s of an n x n matmul in dtype (fp32: TF32 off, as the trainer's fp32)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    times = []
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / float(np.median(times)) / 1e12


def part_machine(device, dry):
    info = {"torch": torch.__version__, "device": device, "python": sys.version.split()[0]}
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(device)
        info.update(name=p.name, memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}")
        torch.backends.cuda.matmul.allow_tf32 = False
    n = 512 if dry else 8192
    info["bf16_tflops"] = ceiling(device, torch.bfloat16, n)  # unrounded: a divisor below
    info["fp32_tflops"] = ceiling(device, torch.float32, n)
    say(f"[1] machine: {info} (TFLOP/s: n x n matmuls, n = {n})")
    RESULTS["machine"] = info
    return info


def _digits_cfg(epochs=(1, 2, 3)):
    return TrainConfig(dataset="digits", arch="small_st_vgg", n_models=3, epochs=epochs, train_size=600,
                       test_size=300).validate().resolved()


def _interrupt_after(n):
    calls = []

    def tick():
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
    return tick


def part_engines(device, dry, tmp):
    """Both engines train and learn on the device; stacked resumes; bf16 tracks fp32."""
    out = {}
    cfg = _digits_cfg()
    for engine in ("loop", "stacked"):
        for precision in ("fp32", "bf16"):
            rt = Runtime(device=device, progress=False, engine=engine, precision=precision, workers=1)
            rec = train_collection(cfg, tmp / f"{engine}_{precision}", rt)
            acc = rec.accuracies("test")
            out[f"{engine} {precision}"] = [round(float(acc[:, 0].mean()), 3), round(float(acc[:, -1].mean()), 3)]
    data = TrainingData(prepare_dataset(cfg), cfg.arch, device)
    jobs = make_jobs(cfg)
    whole = train_group(jobs, cfg, data, [Checkpoint(tmp / "w" / f"{j.name}.pt") for j in jobs], device)
    killed = [Checkpoint(tmp / "k" / f"{j.name}.pt") for j in jobs]
    try:
        train_group(jobs, cfg, data, killed, device, on_epoch=_interrupt_after(2 * len(jobs)))
    except KeyboardInterrupt:
        pass
    resumed = train_group(jobs, cfg, data, killed, device)
    same = float(np.mean([(w["test"]["pred"] == r["test"]["pred"]).mean() for w, r in zip(whole, resumed)]))
    loop_reads = train_member(jobs[0], cfg, data, Checkpoint(tmp / "k" / f"{jobs[0].name}.pt"), device)
    out["stacked resumed == uninterrupted (share of predictions)"] = round(same, 4)
    out["loop reads the stacked checkpoint"] = bool(np.array_equal(loop_reads["test"]["pred"], resumed[0]["test"]["pred"]))
    learned = all(v[1] > v[0] + 0.2 for k, v in out.items() if isinstance(v, list))
    out["verdict"] = "pass" if learned and same > 0.99 and out["loop reads the stacked checkpoint"] else "FAIL"
    say(f"[2] engines on {device}: test accuracy first -> last epoch {json.dumps(out)}")
    RESULTS["engines"] = out


def _flops(arch, data, batch):
    from torch.utils.flop_counter import FlopCounterMode
    from agreebook.models import build_model
    model = build_model(arch, data.in_shape, data.n_classes).to(data.x["train"].device)
    x = data.x["train"][:batch].permute(0, 3, 1, 2)
    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.cross_entropy(model(x), data.y["train"][:batch]).backward()
    return fc.get_total_flops()


def part_throughput(device, dry, tmp, machine):
    cuda = device.startswith("cuda")
    n_img = 200 if dry else 5000
    sizes = (2, 4) if dry else (10, 100)
    rows = []
    for arch in ("small_st_vgg", "st_vgg"):
        cfg = TrainConfig(dataset="synthetic_cifar", arch=arch, n_models=max(sizes), epochs=(1,), train_size=n_img,
                          test_size=100).validate().resolved()
        data = TrainingData(prepare_dataset(cfg), cfg.arch, device)
        step_flops = _flops(arch, data, cfg.batch_size)
        epoch_flops = step_flops * n_img / cfg.batch_size  # per member, training only (eval is 1/3 of a step)
        for precision in ("fp32", "bf16"):
            jobs = make_jobs(cfg.replace(n_models=max(sizes)))
            k = 2 if dry else 3  # the loop is linear in N: time k members, scale
            t = time.perf_counter()
            for j in jobs[:k]:
                train_member(j, cfg, data, Checkpoint(tmp / f"loop_{arch}_{precision}_{j.name}.pt"), device,
                             checkpoint_every_s=float("inf"), precision=precision)
            sync(device)
            loop_rate = k / (time.perf_counter() - t)  # member-epochs per second
            for n in sizes:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                warm = jobs[:n]
                tag = f"{arch}_{precision}_{n}"
                train_group(warm, cfg, data, [Checkpoint(tmp / f"warm_{tag}_{j.name}.pt") for j in warm], device,
                            checkpoint_every_s=float("inf"), precision=precision)  # compile and allocate once
                sync(device)
                t = time.perf_counter()
                train_group(warm, cfg, data, [Checkpoint(tmp / f"timed_{tag}_{j.name}.pt") for j in warm], device,
                            checkpoint_every_s=float("inf"), precision=precision)
                sync(device)
                took = time.perf_counter() - t
                rate = n / took
                row = {"arch": arch, "N": n, "precision": precision, "loop member-epochs/s": round(loop_rate, 3),
                       "stacked member-epochs/s": round(rate, 3), "ratio": round(rate / loop_rate, 2),
                       "stacked TFLOP/s": round(n * epoch_flops / took / 1e12, 3),
                       "% of bf16 ceiling": round(100 * n * epoch_flops / took / 1e12 / machine["bf16_tflops"], 1),
                       "peak GiB": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None}
                rows.append(row)
                say(f"[3] {row}")
    target = [r for r in rows if r["arch"] == "small_st_vgg" and r["N"] == max(sizes) and r["precision"] == "bf16"]
    verdict = ("skipped: --dry-run (toy sizes on a CPU)" if dry else
               f"{'met' if target and target[0]['ratio'] >= 10 else 'NOT met'}: stacked / loop at N=100 small st-VGG "
               f"bf16 = {target[0]['ratio'] if target else '?'} (target >= 10)")
    say(f"[3] target: {verdict}")
    RESULTS["throughput"] = {"rows": rows, "images": n_img, "verdict": verdict}


def part_paper_smoke(device, dry, tmp):
    n, size = (4, 200) if dry else (100, 5000)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    cfg = TrainConfig(dataset="synthetic_cifar", arch="small_st_vgg" if dry else "st_vgg", n_models=n, epochs=(1, 2),
                      train_size=size, test_size=size // 5)
    t = time.perf_counter()
    rec = train_collection(cfg, tmp / "paper", Runtime(device=device, progress=False))
    took = time.perf_counter() - t
    acc = rec.accuracies("test")
    out = {"models": n, "arch": cfg.arch, "train images": size, "seconds": round(took, 1), "engine": rec.meta["engine"],
           "stack": rec.meta.get("stack"), "precision": rec.meta["precision"], "complete": rec.is_complete,
           "test accuracy by epoch": [round(float(a), 3) for a in acc.mean(0)],
           "peak GiB": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.startswith("cuda") else None}
    say(f"[4] paper-scale smoke: {out}")
    RESULTS["paper_smoke"] = out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU; CUDA-only parts skipped")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not a.dry_run
    device = "cuda" if cuda else "cpu"
    if not cuda:
        say("no CUDA device used (--dry-run or none found): every part runs on the CPU at toy sizes; the CUDA "
            "measurements (memory, TF32 off) are skipped")
    dry = a.dry_run or not cuda
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        machine = part_machine(device, dry)
        for name, part in (("engines", lambda: part_engines(device, dry, tmp)),
                           ("throughput", lambda: part_throughput(device, dry, tmp, machine)),
                           ("paper_smoke", lambda: part_paper_smoke(device, dry, tmp))):
            try:
                part()
            except Exception as exc:  # one part failing must not hide the others' results
                RESULTS[name] = {"error": f"{type(exc).__name__}: {exc}"}
                say(f"[{name}] FAILED: {type(exc).__name__}: {exc}")
    RESULTS["seconds"] = round(time.perf_counter() - t0, 1)
    RESULTS["dry_run"] = dry
    (out / "gpu_check.json").write_text(json.dumps(RESULTS, indent=1) + "\n")
    failed = [k for k, v in RESULTS.items() if isinstance(v, dict) and ("error" in v or v.get("verdict") == "FAIL")]
    say(f"done in {RESULTS['seconds']} s; results in {out / 'gpu_check.json'}" +
        (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
