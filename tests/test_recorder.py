"""Recording a collection from a user's own training loop (agreebook.recorder)."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agreebook import scores as SC
from agreebook.record import Record, RecordError
from agreebook.recorder import Recorder

REPO = Path(__file__).resolve().parent.parent


def test_the_readme_loop_runs_as_printed(tmp_path, monkeypatch):
    readme = (REPO / "README.md").read_text()
    code = re.search(r"\*\*Your own training loop\.\*\*.*?```python\n(.*?)```", readme, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    env = {}
    exec(compile(code, "README.md", "exec"), env)
    rec = env["record"]
    back = Record.load(tmp_path / "runs" / "my_loop")
    assert rec.is_complete and back.n_models == 4 and list(back.epochs) == [1, 2, 4]
    assert back.accuracies("test")[:, -1].min() > 0.5  # the nets did learn the digits (chance: 0.1)
    t = SC.scores_table(back, "test")
    assert not t.attrs["missing"] and len(t) == 397


def test_rows_resume_refuse_another_collection_and_name_what_is_missing(tmp_path):
    y = {"test": np.array([0, 1, 2, 1])}
    r = Recorder(tmp_path, y, n_models=2, epochs=[1, 3])
    r.log(0, 1, "test", np.array([0, 1, 1, 1]))
    logits = np.eye(3)[[0, 1, 2, 0]] * 3.0
    r.log(0, 3, "test", logits)
    with pytest.raises(RecordError, match=r"2 row\(s\) not logged yet \(member 1 epoch 1 test, member 1 epoch 3 test\)"):
        r.finish()
    again = Recorder(tmp_path, y, n_models=2, epochs=[1, 3])  # a rerun after a kill
    assert again.logged(0, 1, "test") and not again.logged(1, 1, "test")
    partial = again.finish(allow_incomplete=True)
    assert partial.complete.tolist() == [[True, True], [False, False]]
    assert partial.outputs == {}  # one row came without logits: no outputs rather than half of them
    np.testing.assert_array_equal(partial.predictions["test"][0, 1], [0, 1, 2, 0])
    with pytest.raises(RecordError, match="holds rows of another collection \\(its epochs differ\\)"):
        Recorder(tmp_path, y, n_models=2, epochs=[1, 2])
    with pytest.raises(RecordError, match="epoch 2 is not one of the recorded epochs"):
        again.log(1, 2, "test", np.zeros(4, int))
    with pytest.raises(RecordError, match="test has 4 examples; these outputs have 3"):
        again.log(1, 1, "test", np.zeros(3, int))
    with pytest.raises(RecordError, match="member must be 0..1"):
        again.log(2, 1, "test", np.zeros(4, int))


def test_several_processes_write_one_folder_without_losing_rows(tmp_path):
    y = np.arange(300) % 5
    np.save(tmp_path / "y.npy", y)
    worker = f"""
import sys, numpy as np
from agreebook.recorder import Recorder
m = int(sys.argv[1]); y = np.load({str(tmp_path / 'y.npy')!r})
r = Recorder({str(tmp_path / 'run')!r}, {{"test": y}}, n_models=6, epochs=list(range(1, 11)))
rng = np.random.default_rng(m)
for e in range(1, 11):
    r.log(m, e, "test", rng.normal(size=(300, 5)))
"""
    procs = [subprocess.Popen([sys.executable, "-c", worker, str(m)]) for m in range(6)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    rec = Recorder(tmp_path / "run", {"test": y}, n_models=6, epochs=list(range(1, 11))).finish()
    assert rec.is_complete and set(rec.outputs["test"]) == set(SC.OUTPUTS)
    for m in range(6):  # each process's rows, intact
        z = np.random.default_rng(m).normal(size=(300, 5))
        np.testing.assert_array_equal(rec.predictions["test"][m, 0], z.argmax(1))


def test_ambiguous_outputs_and_odd_epochs_are_refused(tmp_path):
    r = Recorder(tmp_path, {"test": np.array([0, 1, 1])}, n_models=2, epochs=[1, 2])
    near = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.505]])  # a bf16-like softmax: off by 5e-3
    with pytest.raises(RecordError, match="do not quite sum to 1 .* pass kind="):
        r.log(0, 1, "test", near)
    r.log(0, 1, "test", near, kind="probabilities")
    with pytest.raises(RecordError, match="epoch 1.0 is not one of the recorded epochs"):
        r.log(0, 1.0, "test", np.zeros(3, int))
    with pytest.raises(RecordError, match="labels reach 1, but these outputs have 1 classes"):
        r.log(1, 1, "test", np.zeros((3, 1)))
