"""``python -m agreebook.worker OUT JOBS THREADS DATA_ROOT DOWNLOAD CKPT_S PRECISION``: one CPU worker.

JOBS is a comma-separated list of job names (m0000,m0003,...): the driver hands each worker its
share of the jobs left, so a resumed run neither retrains finished jobs nor idles a worker.
"""
import sys

from .executors import worker_main

if __name__ == "__main__":
    out, names, threads, root, download, ckpt_s, precision = sys.argv[1:8]
    worker_main(out, set(names.split(",")), int(threads), root or None, download == "1", float(ckpt_s), precision)
