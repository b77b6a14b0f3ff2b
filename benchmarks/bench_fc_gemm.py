"""How fast can the FC net's training step be on this CPU?  Its GEMMs alone, no framework.

usage: python benchmarks/bench_fc_gemm.py

One step of the fully connected net (3072-512-512-10, batch 100) is these matrix products:
forward x@W1, h1@W2, h2@W3; backward the weight gradients of all three and the input
gradients of layers 2 and 3.  This times exactly those products with torch.mm, (a) on all
cores in one process, (b) on one thread in each of ``cores`` processes at once, and prints
their rate against the fp32 matmul ceiling measured alongside.  It bounds what any trainer
can reach for this net here: a trainer still adds the activations, the loss, the optimiser
step and the data gather on top.
"""
import os
import statistics
import subprocess
import sys
import time

import torch

from bench_train import matmul_ceiling  # this folder is on sys.path when run as a script

SHAPES = [  # (m, k, n) of each product in one training step, batch 100
    (100, 3072, 512), (100, 512, 512), (100, 512, 10),  # forward
    (512, 100, 10), (100, 10, 512),  # layer 3: weight grad, input grad
    (512, 100, 512), (100, 512, 512),  # layer 2
    (3072, 100, 512),  # layer 1: weight grad only (the input needs none)
]
FLOPS = sum(2 * m * k * n for m, k, n in SHAPES)


def steps_per_s(seconds=3.0):
    mats = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in SHAPES]
    for a, b in mats:
        a @ b
    rates = []
    for _ in range(5):
        t, done = time.perf_counter(), 0
        while time.perf_counter() - t < seconds / 5:
            for a, b in mats:
                torch.mm(a, b)
            done += 1
        rates.append(done / (time.perf_counter() - t))
    return statistics.median(rates)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        torch.set_num_threads(1)
        print(steps_per_s())
        return
    cores = os.cpu_count()
    torch.set_num_threads(cores)
    c0 = matmul_ceiling()
    together = steps_per_s() * FLOPS / 1e9
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--child"], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(cores)]
    apart = sum(float(p.communicate()[0]) for p in procs) * FLOPS / 1e9
    torch.set_num_threads(cores)
    c = statistics.median([c0, matmul_ceiling()])
    print(f"FC step GEMMs ({FLOPS / 1e9:.3f} GFLOP a step), {cores} cores, fp32 matmul ceiling {c:.0f} GFLOP/s")
    print(f"  one process, {cores} threads:   {together:6.1f} GFLOP/s  {100 * together / c:4.0f}% ceiling")
    print(f"  {cores} processes, 1 thread each: {apart:6.1f} GFLOP/s  {100 * apart / c:4.0f}% ceiling")


if __name__ == "__main__":
    main()
