"""``python -m agreebook.worker OUT WORKER WORKERS THREADS DATA_ROOT DOWNLOAD CKPT_S``: one CPU worker."""
import sys

from .train import worker_main

if __name__ == "__main__":
    out, worker, workers, threads, root, download, ckpt_s = sys.argv[1:8]
    worker_main(out, int(worker), int(workers), int(threads), root or None, download == "1", float(ckpt_s))
