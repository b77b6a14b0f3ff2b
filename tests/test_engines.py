"""The CPU kernels (FastELU, FastDropout) and the stacked engine (members together under vmap)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from agreebook.config import ConfigError, TrainConfig
from agreebook.models import FastDropout, FastELU, build_model, dropout_rates
from agreebook.engines.loop import train_member
from agreebook.engines.stacked import member_optimizer_state, plain_copy, stack_optimizer_states, train_group
from agreebook.member import Checkpoint, make_jobs
from agreebook.prepare import TrainingData, prepare_dataset
from agreebook.train import Runtime, train_collection

LOOP = Runtime(workers=1, progress=False, engine="loop")
STACKED = Runtime(progress=False, engine="stacked")


def test_fast_elu_matches_torch_forward_and_backward():
    torch.manual_seed(0)
    x = (torch.randn(8, 16, 5, 5) * 3).contiguous(memory_format=torch.channels_last)
    x[0, 0, 0, :3] = torch.tensor([0.0, -1e-9, 1e-9])
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = FastELU()(a)
    ref = F.elu(b)
    # exp-based ELU is not torch's kernel: equal up to float32 rounding, whose last bits
    # depend on the CPU's vector width and the torch build (torch.testing's float32 defaults)
    torch.testing.assert_close(out, ref)
    assert out.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(x)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(a.grad, b.grad)
    xd = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(FastELU(), (xd,))


def test_fast_dropout_rate_scale_gradient_and_seed():
    x = torch.ones(100, 32, 16, 16).contiguous(memory_format=torch.channels_last).requires_grad_()
    drop = FastDropout(0.25)
    torch.manual_seed(3)
    out = drop(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    kept = out != 0
    assert abs(1 - kept.float().mean().item() - 0.25) < 0.003  # 819,200 draws: sd 0.0005
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.75))
    out.sum().backward()
    torch.testing.assert_close(x.grad, out.detach())  # the gradient is the mask
    torch.manual_seed(3)
    assert torch.equal(drop(x), out)  # torch's global seed decides the mask
    assert not torch.equal(drop(x), out)
    drop.eval()
    assert torch.equal(drop(x), x)
    strided = torch.ones(40, 30)[:, ::2]  # not dense: torch's own dropout
    assert FastDropout(0.5).train()(strided).shape == (40, 15)
    assert torch.equal(FastDropout(0.0)(x), x)


def test_plain_copy_swaps_the_eager_kernels():
    model = build_model("small_st_vgg", (3, 8, 8), 10)
    base = plain_copy(model)
    kinds = {type(m) for m in base.modules()}
    assert FastELU not in kinds and FastDropout not in kinds and nn.ELU in kinds and nn.Dropout in kinds
    assert all(p.device.type == "meta" for p in base.parameters())
    assert any(isinstance(m, FastELU) for m in model.modules())  # the original is untouched


@pytest.mark.parametrize("opt", ["adam", "sgd"])
def test_optimizer_states_stack_and_split(opt):
    torch.manual_seed(0)
    nets = [nn.Linear(3, 2) for _ in range(3)]
    states = []
    for net in nets:
        o = (torch.optim.Adam(net.parameters()) if opt == "adam"
             else torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9))
        net(torch.randn(4, 3)).sum().backward()
        o.step()
        states.append(o.state_dict())
    stacked = stack_optimizer_states(states)
    assert stacked["state"][0][("exp_avg" if opt == "adam" else "momentum_buffer")].shape == (3, 2, 3)
    for m, st in enumerate(states):
        back = member_optimizer_state(stacked, m)
        for i in st["state"]:
            for k, v in st["state"][i].items():
                torch.testing.assert_close(back["state"][i][k], v)


SMALL = dict(dataset="digits", arch="small_st_vgg", n_models=3, epochs=(1, 2), train_size=400, test_size=200)


def test_stacked_engine_matches_the_loop_without_dropout(tmp_path):
    # same seeds, same data order, no dropout: only the float summation order differs
    cfg = TrainConfig(**{**SMALL, "epochs": (1, 6)}, dropout=0.0, save_probabilities=True)
    loop = train_collection(cfg, tmp_path / "loop", LOOP)
    stacked = train_collection(cfg, tmp_path / "stacked", STACKED)
    assert stacked.meta["engine"] == "stacked" and loop.meta["engine"] == "loop"
    assert stacked.meta["stack"] == 3 and stacked.meta["precision"] == "fp32"
    for s in ("train", "test"):
        same = (loop.predictions[s] == stacked.predictions[s]).mean()
        assert same > 0.99, (s, same)
        np.testing.assert_allclose(loop.probabilities[s].astype(np.float32),
                                   stacked.probabilities[s].astype(np.float32), atol=0.02)
    assert loop.accuracies("test")[:, -1].mean() > 0.5  # not two matching constant predictors


def test_stacked_engine_learns_with_dropout_and_is_reproducible(tmp_path):
    cfg = TrainConfig(**{**SMALL, "epochs": (1, 6)})
    a = train_collection(cfg, tmp_path / "a", STACKED)
    b = train_collection(cfg, tmp_path / "b", Runtime(progress=False, engine="stacked", stack=2))
    c = train_collection(cfg, tmp_path / "c", STACKED)
    np.testing.assert_array_equal(a.predictions["test"], c.predictions["test"])  # seeded
    assert b.meta["stack"] == 2
    acc = a.accuracies("test")
    assert acc[:, -1].mean() > acc[:, 0].mean() + 0.2  # the loop engine: 0.15 -> 0.48
    assert not np.array_equal(a.predictions["test"][0], a.predictions["test"][1])  # members differ


def _group(tmp_path, cfg, name):
    cfg = cfg.validate().resolved()
    data = TrainingData(prepare_dataset(cfg), cfg.arch, "cpu")
    jobs = make_jobs(cfg)
    folder = tmp_path / name
    folder.mkdir()
    return cfg, data, jobs, [Checkpoint(folder / f"{j.name}.pt") for j in jobs]


def _interrupt_after(n_ticks):
    """An on_epoch callback that interrupts training at its n-th call (one call per member and epoch)."""
    calls = []

    def tick():
        calls.append(1)
        if len(calls) == n_ticks:
            raise KeyboardInterrupt

    return tick


def test_stacked_group_resumes_to_the_same_predictions_and_the_loop_reads_its_checkpoints(tmp_path):
    cfg = TrainConfig(**{**SMALL, "epochs": (1, 2, 3)})
    cfg, data, jobs, paths = _group(tmp_path, cfg, "whole")
    whole = train_group(jobs, cfg, data, paths, "cpu")
    _, _, _, paths2 = _group(tmp_path, cfg, "killed")
    with pytest.raises(KeyboardInterrupt):  # after epoch 2, checkpoints written
        train_group(jobs, cfg, data, paths2, "cpu", on_epoch=_interrupt_after(2 * len(jobs)))
    assert torch.load(paths2[0].path, weights_only=False)["epoch"] == 2
    resumed = train_group(jobs, cfg, data, paths2, "cpu")
    assert set(torch.load(paths2[0].path, weights_only=False)) == {"epoch", "out"}  # finished: predictions only
    for w, r in zip(whole, resumed):
        for s in w:
            assert w[s].keys() == r[s].keys()
            for k in w[s]:  # the predictions, and the outputs where the config keeps them
                np.testing.assert_array_equal(w[s][k], r[s][k])
    # the checkpoint format is the loop engine's: a member stacked to epoch 2 finishes in the loop
    _, _, _, paths3 = _group(tmp_path, cfg, "mixed")
    with pytest.raises(KeyboardInterrupt):
        train_group(jobs, cfg, data, paths3, "cpu", on_epoch=_interrupt_after(2 * len(jobs)))
    out = train_member(jobs[0], cfg, data, paths3[0], "cpu")
    np.testing.assert_array_equal(out["test"]["pred"][:2], whole[0]["test"]["pred"][:2])
    assert (out["test"]["pred"][2] == whole[0]["test"]["pred"][2]).mean() > 0.7  # dropout masks differ


def test_stacked_engine_takes_batch_norm_nets(tmp_path):
    cfg = TrainConfig(dataset="digits", arch="resnet18", n_models=2, epochs=(1,), train_size=100, test_size=50,
                      batch_size=50)
    rec = train_collection(cfg, tmp_path / "r", STACKED)
    assert rec.is_complete and rec.predictions["test"].shape == (2, 1, 50)
    cfg, data, jobs, paths = _group(tmp_path, cfg.replace(epochs=(1, 2)), "bn")
    with pytest.raises(KeyboardInterrupt):  # after epoch 1 of 2: checkpoints with weights and statistics
        train_group(jobs, cfg, data, paths, "cpu", on_epoch=_interrupt_after(len(jobs)))
    ck = [torch.load(p.path, weights_only=False)["model"] for p in paths]
    assert not torch.equal(ck[0]["bn1.running_mean"], ck[1]["bn1.running_mean"])  # each its own statistics
    assert int(ck[0]["bn1.num_batches_tracked"]) == 2
    # bf16: batch norm runs in fp32 beside its fp32 statistics (a bf16 weight was refused)
    # one step a member is enough (the refusal came at the first); a CPU without bf16 units (Zen 3)
    # emulates it, and the full set took minutes there
    tiny = cfg.replace(epochs=(1,), train_size=20, test_size=10, batch_size=20)
    bf16 = train_collection(tiny, tmp_path / "bf16", Runtime(progress=False, engine="stacked", precision="bf16"))
    assert bf16.is_complete and bf16.meta["precision"] == "bf16"


def test_bf16_precision_takes_effect_and_tracks_fp32(tmp_path):
    cfg = TrainConfig(dataset="digits", arch="small_st_vgg", n_models=2, epochs=(1, 6), train_size=400, test_size=200,
                      save_probabilities=True)
    for engine in ("loop", "stacked"):
        rec = {p: train_collection(cfg, tmp_path / f"{engine}_{p}", Runtime(workers=1, progress=False, engine=engine,
                                                                              precision=p))
               for p in ("fp32", "bf16")}
        assert rec["bf16"].meta["precision"] == "bf16"
        assert not np.array_equal(rec["bf16"].probabilities["test"], rec["fp32"].probabilities["test"])
        acc = {p: r.accuracies("test")[:, -1] for p, r in rec.items()}
        np.testing.assert_allclose(acc["bf16"], acc["fp32"], atol=0.05)


def test_engine_and_precision_are_checked(tmp_path, offline_root):
    cfg = TrainConfig(**SMALL)
    with pytest.raises(ConfigError, match="unknown engine"):
        train_collection(cfg, tmp_path / "a", Runtime(progress=False, engine="vmap"))
    with pytest.raises(ConfigError, match="unknown precision"):
        train_collection(cfg, tmp_path / "b", Runtime(progress=False, precision="fp16"))
    with pytest.raises(ConfigError, match="positive integer"):
        train_collection(cfg, tmp_path / "b", Runtime(progress=False, engine="stacked", stack=0))
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        train_collection(cfg, tmp_path / "b", Runtime(progress=False, device="gpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no CUDA device"):
            train_collection(cfg, tmp_path / "b", Runtime(progress=False, device="cuda:1"))
    text = TrainConfig(dataset="stackoverflow_titles", arch="bilstm_attention", n_models=2, epochs=(1,))
    with pytest.raises(ConfigError, match="vmap"):
        train_collection(text, tmp_path / "c", Runtime(progress=False, engine="stacked", data_root=str(offline_root)))
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_a_stacked_group_shares_one_eval_batch(tmp_path, monkeypatch):
    # M members each at the loop's eval batch would hold M times its activations on a GPU
    import agreebook.engines.stacked as st
    seen, real = [], st._predict
    monkeypatch.setattr(st, "_predict", lambda *a: seen.append(a[6]) or real(*a))
    cfg, data, jobs, paths = _group(tmp_path, TrainConfig(**{**SMALL, "epochs": (1,)}), "eval")
    train_group(jobs, cfg, data, paths, "cpu")
    assert seen == [250 // 3] * 2  # train and test splits, CPU eval batch 250 over 3 members


def test_dropout_rates_read_from_the_built_models():
    assert dropout_rates("small_st_vgg") == (0.25, 0.5) and dropout_rates("small_st_vgg", 0.1) == (0.1, 0.2)
    assert dropout_rates("fc") == (0.5,) and dropout_rates("fc", 0.0) == (0.0,) and dropout_rates("linear") == ()
    assert dropout_rates("bilstm_attention") == (0.25,)


def test_the_stacked_engine_hands_back_jobs_already_finished(tmp_path):
    # a retried Ray task can find its jobs' last checkpoints written: their predictions are returned
    from agreebook.engines import stacked as st
    cfg, data, jobs, paths = _group(tmp_path, TrainConfig(**{**SMALL, "epochs": (1,)}), "done")
    whole = train_group(jobs, cfg, data, paths, "cpu")
    got = {}
    st.run(jobs, cfg, data, tmp_path / "done", "cpu", "fp32", 0.0, lambda: None,
           lambda job, res: got.setdefault(job.name, res))
    assert list(got) == [j.name for j in jobs]
    for j, w in zip(jobs, whole):
        np.testing.assert_array_equal(got[j.name]["test"]["pred"], w["test"]["pred"])
