"""Training throughput: the plain sequential loop against agreebook's trainer, side by side.

usage: python benchmarks/bench_train.py --data-root DIR [--n 1 10 50] [--repeats 3] [--train-size 2000]

Both sides do the same work: N members of an architecture, one epoch of SGD (batch 100) on a
CIFAR-10 subset, then an eval-mode pass over the train and test subsets. FLOPs come from
torch's FlopCounterMode (forward + backward of a training step, forward of eval).

The machine is shared: its fp32 matmul ceiling (all cores) measured anywhere from 98 to 188
GFLOP/s within one hour.  So each row alternates loop, trainer and a ceiling measurement
``--repeats`` times and reports medians; "% ceiling" is against the median ceiling measured
during that row.  First, a kernel section times one training step of small st-VGG on one
thread with torch's nn.ELU / nn.Dropout against the package's FastELU / FastDropout.
"""
import argparse
import os
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from agreebook.config import TrainConfig
from agreebook.models import build_model
from agreebook.prepare import TrainingData, prepare_dataset
from agreebook.train import Runtime, train_collection


def matmul_ceiling(n=2048, reps=20):
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def work_flops(arch, data, n_train, n_eval, batch=100):
    model = build_model(arch, data.in_shape, data.n_classes)
    x = data.x["train"][:batch].permute(0, 3, 1, 2)
    y = data.y["train"][:batch]
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(model(x), y).backward()
    step = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    fwd = fc.get_total_flops()
    return step * n_train / batch + fwd * n_eval / batch


def kernel_steps(repeats=15, steps=5):
    """Median seconds of one small st-VGG training step (batch 100, 32x32, one thread,
    channels_last) with torch's ELU and dropout, and with the package's."""
    from agreebook.engines.stacked import plain_copy  # the same net with torch's nn.ELU and nn.Dropout
    torch.set_num_threads(1)
    x = torch.randn(100, 32, 32, 3).permute(0, 3, 1, 2)
    y = torch.randint(0, 10, (100,))
    torch.manual_seed(0)
    fast = build_model("small_st_vgg", (3, 32, 32), 10)
    plain = plain_copy(fast).to_empty(device="cpu")
    plain.load_state_dict(fast.state_dict())
    nets = {kind: (m.to(memory_format=torch.channels_last), torch.optim.SGD(m.parameters(), lr=0.05))
            for kind, m in (("torch", plain), ("fast", fast))}
    with FlopCounterMode(display=False) as fc:
        F.cross_entropy(nets["fast"][0](x), y).backward()
    times = {k: [] for k in nets}
    for _ in range(repeats):  # interleaved, so both see the same noise
        for kind, (m, opt) in nets.items():
            for i in range(steps + 1):
                t = time.perf_counter()
                loss = F.cross_entropy(m(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
                if i:  # the first step of a round warms the caches
                    times[kind].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}, fc.get_total_flops()


def plain_loop(arch, data, n_models, cfg):
    """What one writes first: one model after another, default threads, NCHW."""
    x, y = data.x["train"].permute(0, 3, 1, 2).contiguous(), data.y["train"]
    xt = data.x["test"].permute(0, 3, 1, 2).contiguous()
    for m in range(n_models):
        torch.manual_seed(m)
        model = build_model(arch, data.in_shape, data.n_classes)
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
        model.train()
        perm = torch.randperm(len(y))
        for a in range(0, len(y), cfg.batch_size):
            idx = perm[a:a + cfg.batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for xs in (x, xt):
                for a in range(0, len(xs), 1000):
                    model(xs[a:a + 1000]).argmax(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--n", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--archs", nargs="+", default=["small_st_vgg", "fc"])
    ap.add_argument("--train-size", type=int, default=2000)
    ap.add_argument("--test-size", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3, help="alternations of loop / trainer / ceiling per row")
    ap.add_argument("--no-kernels", action="store_true", help="skip the kernel section")
    ap.add_argument("--engine", default="auto", help="the trainer's engine: auto, loop or stacked")
    ap.add_argument("--precision", default="auto",
                    help="the trainer's precision: auto (fp32 on a CPU), fp32 or bf16 (the loop stays fp32)")
    a = ap.parse_args()
    cores = os.cpu_count()
    print(f"machine: {cores} cores, torch {torch.__version__}")
    if not a.no_kernels:
        torch.set_num_threads(1)
        c1 = matmul_ceiling()
        step, flops = kernel_steps()
        torch.set_num_threads(1)
        c1 = statistics.median([c1, matmul_ceiling()])
        print(f"\nkernels: one small st-VGG training step, batch 100, 1 thread (1-thread matmul ceiling {c1:.0f} GFLOP/s)")
        for kind, t in step.items():
            print(f"  {kind + ' ELU/dropout':<20} {1e3 * t:6.1f} ms  {flops / t / 1e9:6.1f} GFLOP/s  "
                  f"{100 * flops / t / 1e9 / c1:4.0f}% ceiling")
        print(f"  fast / torch: {step['torch'] / step['fast']:.2f}x")
    print(f"\nwork: 1 epoch on {a.train_size} CIFAR-10 images (JPEG-q75 offline copy) + eval on "
          f"{a.train_size}+{a.test_size}, per member; medians of {a.repeats} alternations; "
          f"trainer engine {a.engine}, precision {a.precision}\n")
    print(f"{'arch':<13} {'N':>3} {'loop s':>8} {'trainer s':>9} {'speedup':>8} {'loop GF/s':>10} "
          f"{'trainer GF/s':>12} {'ceiling':>8} {'% ceiling':>9}")
    for arch in a.archs:
        cfg = TrainConfig(dataset="cifar10", arch=arch, epochs=(1,), train_size=a.train_size,
                          test_size=a.test_size).resolved()
        ds = prepare_dataset(cfg, a.data_root)
        data = TrainingData(ds, arch, "cpu")
        per_member = work_flops(arch, data, a.train_size, a.train_size + a.test_size)
        for n in a.n:
            loops, trainers, ceilings = [], [], []
            for _ in range(a.repeats):
                torch.set_num_threads(cores)
                ceilings.append(matmul_ceiling())
                t = time.perf_counter()
                plain_loop(arch, data, n, cfg)
                loops.append(time.perf_counter() - t)
                with tempfile.TemporaryDirectory() as out:
                    t = time.perf_counter()
                    train_collection(cfg.replace(n_models=max(n, 2)), out,
                                     Runtime(data_root=a.data_root, progress=False, workers=None if n >= 2 else 1,
                                             engine=a.engine, precision=a.precision))
                    # a collection needs 2 members: for N=1 time 2 sequential ones, per member
                    trainers.append((time.perf_counter() - t) / (2 if n < 2 else 1))
            torch.set_num_threads(cores)
            ceilings.append(matmul_ceiling())
            t_loop, t_tr, ceiling = (statistics.median(v) for v in (loops, trainers, ceilings))
            gf_loop, gf_tr = per_member * n / t_loop / 1e9, per_member * n / t_tr / 1e9
            print(f"{arch:<13} {n:>3} {t_loop:>8.1f} {t_tr:>9.1f} {t_loop / t_tr:>7.2f}x {gf_loop:>10.1f} "
                  f"{gf_tr:>12.1f} {ceiling:>8.0f} {100 * gf_tr / ceiling:>8.0f}%", flush=True)


if __name__ == "__main__":
    main()
