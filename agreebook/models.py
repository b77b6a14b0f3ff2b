"""The paper's architectures (Suppl B) and torchvision's, in one registry.

Each entry builds a ``torch.nn.Module`` for an input shape (C, H, W) and a number of classes
(its optimiser defaults are with every other hyperparameter: ``config.ARCH_DEFAULTS``).  Images smaller than an architecture's
``min_size`` are resized up by the training pipeline (bilinear), so every net takes every set.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class _ELUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        # ELU = max(x, exp(min(x, 0)) - 1), since exp(x) - 1 >= x everywhere
        e = x.clamp(max=0).exp_().sub_(1)
        out = torch.maximum(x, e, out=e)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out, = ctx.saved_tensors
        return torch.ops.aten.elu_backward(grad, 1.0, 1.0, 1.0, True, out)


class FastELU(nn.Module):
    """ELU (alpha 1) that is fast on a CPU: torch's CPU kernel evaluates expm1, which measured
    4x the time of exp and made ELU 22% of a small st-VGG training step on this machine.
    exp(x) - 1 differs from expm1 by at most ~6e-8 (absolute) near 0.  On other devices it is
    torch's own ``F.elu``.  An eager autograd Function: ``engines.stacked.plain_copy`` swaps it for
    ``nn.ELU`` before torch.func transforms."""

    def forward(self, x):
        if x.device.type != "cpu":
            return F.elu(x)
        return _ELUFunction.apply(x)


class _DropoutFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, p):
        n = x.numel()
        # 64 random bits give four 16-bit draws; bernoulli_ draws a double per element
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-2 ** 63, None)
        draws = words.view(torch.int16)[:n].as_strided(x.shape, x.stride())  # x's layout
        mask = torch.where(draws >= round(p * 65536) - 32768, 1.0 / (1.0 - p), 0.0).to(x.dtype)
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx, grad):
        mask, = ctx.saved_tensors
        return grad * mask, None


class FastDropout(nn.Dropout):
    """Inverted dropout whose mask comes from 16-bit random draws (p rounded to a multiple of
    1/65536; exact for 0.25 and 0.5): on this CPU ``bernoulli_`` took 8 ms of a 9.6 ms dropout
    over 100x32x16x16 activations, the bits 1.2 ms.  Seeded by torch's global generator like
    ``nn.Dropout``.  On other devices and for non-dense tensors it is ``nn.Dropout``; under
    torch.func transforms, ``engines.stacked.plain_copy`` swaps it for one."""

    def forward(self, x):
        dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
        if not self.training or not 0 < self.p < 1 or x.device.type != "cpu" or not dense:
            return super().forward(x)
        return _DropoutFunction.apply(x, self.p)


class GlobalAvgPool(nn.Module):
    """``AdaptiveAvgPool2d(1)`` as a mean: vmap (the stacked engine) has no batching rule for
    adaptive pooling and falls back to a slow per-member loop."""

    def forward(self, x):
        return x.mean((-2, -1), keepdim=True)


ACTIVATIONS = {"elu": FastELU, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
               "leaky_relu": nn.LeakyReLU, "identity": nn.Identity}


class ArchError(ValueError):
    """Unknown architecture, or an option it does not take."""


@dataclass(frozen=True)
class Arch:
    name: str
    build: callable  # (in_shape, n_classes, activation, dropout) -> nn.Module
    min_size: int = 1
    description: str = ""
    configurable: bool = True  # takes activation / dropout overrides
    activation: str = "relu"  # its default activation
    modality: str = "image"  # "image": (C, H, W) inputs; "text": token ids (vocab_size, max_len, emb_dim)
    # Raised when the network a name builds changes: a record's identity carries it, so a run
    # folder of the earlier network is refused instead of resumed or reused as this one.
    revision: int = 0


def _act(name):
    if name not in ACTIVATIONS:
        raise ArchError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _same_conv(c_in, c_out, k):
    """Keras' 'same' padding; for even k the extra row/column goes right/bottom, as in Keras,
    done explicitly because torch's padding='same' copies the input for even kernels."""
    if k % 2:
        return [nn.Conv2d(c_in, c_out, k, padding=k // 2)]
    return [nn.ZeroPad2d((k // 2 - 1, k // 2, k // 2 - 1, k // 2)), nn.Conv2d(c_in, c_out, k)]


def _st_vgg(blocks, default_act, pool):
    """st-VGG family: pairs of same-padded convs, each pair followed by pooling and dropout,
    then dense 512 and the classifier (the authors' Keras st-VGG, no batch norm)."""

    def build(in_shape, n_classes, activation=None, dropout=None):
        act = activation or default_act
        p1, p2 = (0.25, 0.5) if dropout is None else (dropout, 2 * dropout)
        c, h, w = in_shape
        layers = []
        for width, k in blocks:
            layers += [*_same_conv(c, width, k), _act(act), *_same_conv(width, width, k), _act(act)]
            if min(h, w) >= 2:  # small inputs (digits' 8x8) keep their last pixels
                layers.append(pool(2))
                h, w = h // 2, w // 2
            layers.append(FastDropout(p1))
            c = width
        layers += [nn.Flatten(), nn.Linear(c * h * w, 512), _act(act), FastDropout(min(p2, 0.9)),
                   nn.Linear(512, n_classes)]
        return nn.Sequential(*layers)

    return build


_ST_BLOCKS = [(32, 3), (64, 3), (128, 3), (256, 2)]


def _mnist_net(in_shape, n_classes, activation=None, dropout=None):
    """The paper's MNIST net (Keras' mnist_cnn): conv32-conv64 (valid 3x3), max-pool,
    dropout 0.25, dense 128, dropout 0.5."""
    act = activation or "relu"
    p1, p2 = (0.25, 0.5) if dropout is None else (dropout, 2 * dropout)
    c, h, w = in_shape
    return nn.Sequential(
        nn.Conv2d(c, 32, 3), _act(act), nn.Conv2d(32, 64, 3), _act(act), nn.MaxPool2d(2), FastDropout(p1),
        nn.Flatten(), nn.Linear(64 * ((h - 4) // 2) * ((w - 4) // 2), 128), _act(act),
        FastDropout(min(p2, 0.9)), nn.Linear(128, n_classes))


def _fc(in_shape, n_classes, activation=None, dropout=None):
    """The paper's fully connected net (Suppl B, its Gaussian task): "simply flattened the
    data, followed by 2 fully connected layers with 1024 units, followed by an output layer",
    "0.5 dropout after each fully connected layer".  The paper names no activation: ReLU."""
    act = activation or "relu"
    d = 0.5 if dropout is None else dropout
    n_in = in_shape[0] * in_shape[1] * in_shape[2]
    return nn.Sequential(nn.Flatten(), nn.Linear(n_in, 1024), _act(act), FastDropout(d),
                         nn.Linear(1024, 1024), _act(act), FastDropout(d), nn.Linear(1024, n_classes))


def _linear(in_shape, n_classes, activation=None, dropout=None):
    """A linear classifier on the pixels (multinomial logistic regression): the weakest of
    §4's architectures in the book, below the fully connected net and the CNNs."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_shape[0] * in_shape[1] * in_shape[2], n_classes))


class BiLSTMAttention(nn.Module):
    """Word embeddings, a bidirectional LSTM, additive attention over its outputs (padding
    masked), and a linear classifier: the paper's text model (§3, Fig 4a)."""

    def __init__(self, vocab_size, emb_dim, n_classes, hidden=64, dropout=0.25):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=0)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(emb_dim, hidden, batch_first=True, bidirectional=True)
        self.score = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.Tanh(), nn.Linear(hidden, 1, bias=False))
        self.out = nn.Linear(2 * hidden, n_classes)

    def features(self, tokens):
        """The attention-pooled LSTM state: (batch, 2 * hidden)."""
        tokens = tokens.long()
        # packed, so the backward direction starts at each row's last word, not at its padding
        lengths = (tokens != 0).sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.drop(self.embedding(tokens)), lengths,
                                                   batch_first=True, enforce_sorted=False)
        h, _ = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], batch_first=True,
                                                total_length=tokens.shape[1])
        w = self.score(h).squeeze(-1).masked_fill(tokens == 0, float("-inf"))
        w = torch.nan_to_num(w.softmax(1))  # an all-padding row gets zero weights, not NaN
        return (w.unsqueeze(-1) * h).sum(1)

    def forward(self, tokens):
        return self.out(self.drop(self.features(tokens)))


def _bilstm_attention(in_shape, n_classes, activation=None, dropout=None):
    vocab_size, _, emb_dim = in_shape
    return BiLSTMAttention(vocab_size, emb_dim, n_classes, dropout=0.25 if dropout is None else dropout)


def _torchvision(name):
    def build(in_shape, n_classes, activation=None, dropout=None):
        import torchvision.models as tvm
        c = in_shape[0]
        small = min(in_shape[1:]) < 64
        if name.startswith("resnet"):
            m = getattr(tvm, name)(weights=None, num_classes=n_classes)
            # the usual CIFAR adaptation: a 3x3 stem without the early down-sampling
            m.conv1 = nn.Conv2d(c, 64, 3 if small else 7, 1 if small else 2, 1 if small else 3, bias=False)
            if small:
                m.maxpool = nn.Identity()
            m.avgpool = GlobalAvgPool()
        elif name == "densenet121":
            m = tvm.densenet121(weights=None, num_classes=n_classes)
            m.features.conv0 = nn.Conv2d(c, 64, 3 if small else 7, 1 if small else 2, 1 if small else 3, bias=False)
            if small:
                m.features.pool0 = nn.Identity()
        elif name == "vgg19":
            m = tvm.vgg19(weights=None, num_classes=n_classes)
            m.features[0] = nn.Conv2d(c, 64, 3, padding=1)
            if small:  # 32x32 leaves 1x1x512: skip the 7x7 upsampling and the 25088-wide head
                m.avgpool = GlobalAvgPool()
                m.classifier = nn.Sequential(nn.Linear(512, 512), nn.ReLU(True), nn.Dropout(0.5),
                                             nn.Linear(512, n_classes))
        elif name == "alexnet":
            m = tvm.alexnet(weights=None, num_classes=n_classes)
            m.features[0] = nn.Conv2d(c, 64, 11, 4, 2)
        else:  # pragma: no cover - the registry lists only the names above
            raise ArchError(name)
        return m

    return build


ARCHS = {a.name: a for a in [
    Arch("st_vgg", _st_vgg(_ST_BLOCKS, "elu", nn.MaxPool2d), activation="elu",
         description="st-VGG: 8 convs 32-32-64-64-128-128-256-256, ELU, max-pool per pair, dense 512"),
    Arch("small_st_vgg", _st_vgg(_ST_BLOCKS[:2], "elu", nn.MaxPool2d), activation="elu",
         description="small st-VGG: st-VGG's first two blocks (4 convs 32-32-64-64) and its head"),
    Arch("linear_st_vgg", _st_vgg(_ST_BLOCKS, "identity", nn.AvgPool2d), activation="identity",
         description="linear st-VGG: st-VGG with identity activations and average pooling"),
    Arch("linear_small_st_vgg", _st_vgg(_ST_BLOCKS[:2], "identity", nn.AvgPool2d), activation="identity",
         description="linear small st-VGG: small st-VGG with identity activations and average pooling"),
    Arch("mnist_net", _mnist_net, min_size=5, description="the MNIST net: conv32-conv64-pool-dense128 (AdaDelta)"),
    Arch("fc", _fc, revision=1,  # 1: the paper's 2x1024 (was 2x512)
         description="the paper's fully connected net: two hidden layers of 1024, ReLU, dropout 0.5 (lr 0.04)"),
    Arch("linear", _linear, configurable=False,
         description="linear classifier on the pixels (multinomial logistic regression), SGD lr 0.05"),
    Arch("bilstm_attention", _bilstm_attention,
         description="BiLSTM (64 per direction) with attention over word embeddings (100-d, or GloVe's)",
         configurable=False, modality="text"),
    *[Arch(n, _torchvision(n), min_size=64 if n == "alexnet" else 32,
           description=f"torchvision {n}, adapted to the input size and classes", configurable=False)
      for n in ("vgg19", "resnet18", "resnet50", "alexnet", "densenet121")],
]}


def get_arch(name):
    if name not in ARCHS:
        raise ArchError(f"unknown architecture {name!r}; known: {', '.join(ARCHS)}")
    return ARCHS[name]


def build_model(name, in_shape, n_classes, activation=None, dropout=None):
    """A fresh, randomly initialised model (use torch.manual_seed before for a given init)."""
    arch = get_arch(name)
    if not arch.configurable and (activation is not None or dropout is not None):
        raise ArchError(f"{name} takes no activation / dropout overrides; only "
                        f"{', '.join(a for a in ARCHS if ARCHS[a].configurable)} do")
    if arch.modality == "text":
        return arch.build(in_shape, n_classes, activation=activation, dropout=dropout)
    size = max(arch.min_size, *in_shape[1:])
    return arch.build((in_shape[0], size, size) if size != in_shape[1] or size != in_shape[2] else in_shape,
                      n_classes, activation=activation, dropout=dropout)


def input_size(name, in_shape):
    """Spatial size the architecture is fed for images of ``in_shape`` (C, H, W)."""
    return max(get_arch(name).min_size, *in_shape[1:])


TEXT_EMBEDDING_DIM = 100  # learned from scratch unless a vectors file gives its own width


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def dropout_rates(name, dropout=None):
    """The distinct dropout probabilities of architecture ``name`` with the ``dropout`` override
    (None: its defaults), in the order its layers first apply them: read from the model itself, built on
    the meta device (no memory, no init), so a page that reports them cannot drift from the
    builders.  The rates do not depend on the input's shape; a typical one is used.

    >>> dropout_rates("small_st_vgg"), dropout_rates("small_st_vgg", 0.1), dropout_rates("linear")
    ((0.25, 0.5), (0.1, 0.2), ())
    """
    arch = get_arch(name)
    shape = (500, 32, TEXT_EMBEDDING_DIM) if arch.modality == "text" else (3, 32, 32)
    with torch.device("meta"):
        model = build_model(name, shape, 2, dropout=dropout)
    rates = []
    for m in model.modules():
        if isinstance(m, nn.Dropout) and m.p not in rates:
            rates.append(m.p)
    return tuple(rates)
