"""benchmarks/gpu_check.sh runs end to end on a CPU at --dry-run sizes, before it meets a GPU."""
import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_check_runs_dry_on_a_cpu(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--dry-run", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path / "o/gpu_check.json").read_text())
    assert res["dry_run"] and (tmp_path / "o/gpu_check.log").read_text().startswith("no CUDA device used")
    assert res["engines"]["verdict"] == "pass"
    rows = res["throughput"]["rows"]
    assert {(r["arch"], r["precision"]) for r in rows} == {(a, p) for a in ("small_st_vgg", "st_vgg")
                                                           for p in ("fp32", "bf16")}
    assert all(r["ratio"] > 0 for r in rows) and res["throughput"]["verdict"].startswith("skipped")
    assert res["paper_smoke"]["complete"]
