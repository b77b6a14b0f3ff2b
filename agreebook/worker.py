"""``python -m agreebook.worker OUT WORKER WORKERS THREADS DATA_ROOT DOWNLOAD``: one CPU training worker."""
import sys

from .train import worker_main

if __name__ == "__main__":
    out, worker, workers, threads, root, download = sys.argv[1:7]
    worker_main(out, int(worker), int(workers), int(threads), root or None, download == "1")
