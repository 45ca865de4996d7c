"""PyTorch mirror of the FID Inception-v3 (metrics/inception.c), built on
torchvision 0.14's Inception-v3 modules in the variant of the standard FID
code (pytorch-fid's FIDInceptionV3, ported from TensorFlow's 2015-12-05
graph):
  - Mixed_5b..5d, 6b..6e, 7b: the pool branch average-pools 3x3 stride 1
    pad 1 WITHOUT counting the padding (TensorFlow's average pool);
  - Mixed_7c: the pool branch MAX-pools 3x3 stride 1 pad 1 instead;
  - fc 2048 -> 1008 (TensorFlow's 1008 classes), no auxiliary classifier;
  - BasicConv2d = conv (no bias) + BatchNorm (eps 1e-3) + ReLU, eval mode.
pool3 is the 2048-d output of the global average pool (the FID features),
logits the fc output (the Inception Score's).

The input is (B, 3, 299, 299) in [-1, 1]: pytorch-fid resizes [0, 1] images to
299 x 299 and maps them to [-1, 1] with 2x - 1; the project's images are
already in [-1, 1] (bilinear resizing commutes with 2x - 1), and the resize
happens in featnet.c before the network.

Small test networks map every channel count (not the image's 3) to a
smaller one (fid_inception's div and widths); the state_dict keys are those
of the full network (and of pytorch-fid's published weights file), so one
converter and one C loader serve both. Imported by gen_inception.py and
convert_fid_inception.py; keep it free of side effects.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import inception as tvi

BLOCKS = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1",
          "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2",
          "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
          "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
          "Mixed_7a", "Mixed_7b", "Mixed_7c"]
SIZE = 299
N_LOGITS = 1008


class Actual(int):
    """A channel count that is already the network's own (a block's input,
    the width of what precedes it), which Narrow passes through."""


class Narrow:
    """A conv_block for torchvision's Inception modules that maps the channel
    counts written in them (the full network's) through `width`; the image's
    3 channels and Actual counts pass through."""

    def __init__(self, width):
        self.width = width

    def __call__(self, cin, cout, **kw):
        if cin != 3 and not isinstance(cin, Actual):
            cin = self.width(cin)
        return tvi.BasicConv2d(int(cin), self.width(cout), **kw)


def tf_avg_pool(x):
    # TensorFlow's average pool: the padding does not count in the mean
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(tvi.InceptionA):
    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class FIDInceptionC(tvi.InceptionC):
    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for m in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                  self.branch7x7dbl_5):
            bd = m(bd)
        bp = self.branch_pool(tf_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class FIDInceptionE(tvi.InceptionE):
    """Mixed_7b (max_pool False) and Mixed_7c (max_pool True)."""

    def __init__(self, in_channels, conv_block=None, max_pool=False):
        super().__init__(in_channels, conv_block=conv_block)
        self.max_pool = max_pool

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.max_pool:
            bp = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            bp = tf_avg_pool(x)
        bp = self.branch_pool(bp)
        return torch.cat([b1, b3, bd, bp], 1)


# The blocks after the stem: name, class, arguments (torchvision's Inception3).
MIXED = [("Mixed_5b", FIDInceptionA, dict(pool_features=32)),
         ("Mixed_5c", FIDInceptionA, dict(pool_features=64)),
         ("Mixed_5d", FIDInceptionA, dict(pool_features=64)),
         ("Mixed_6a", tvi.InceptionB, {}),
         ("Mixed_6b", FIDInceptionC, dict(channels_7x7=128)),
         ("Mixed_6c", FIDInceptionC, dict(channels_7x7=160)),
         ("Mixed_6d", FIDInceptionC, dict(channels_7x7=160)),
         ("Mixed_6e", FIDInceptionC, dict(channels_7x7=192)),
         ("Mixed_7a", tvi.InceptionD, {}),
         ("Mixed_7b", FIDInceptionE, dict(max_pool=False)),
         ("Mixed_7c", FIDInceptionE, dict(max_pool=True))]


def fid_inception(div=1, n_logits=N_LOGITS, widths=None):
    """The FID Inception-v3 in eval mode, weights uninitialised. Every channel
    count c of the full network becomes widths[c] if given, else c // div
    (div 1, no widths: the published network). A block's input width is what
    the block before it puts out, so any mapping makes a consistent network."""
    widths = widths or {}
    nb = Narrow(lambda c: widths.get(c, c // div))
    net = tvi.Inception3(num_classes=n_logits, aux_logits=False, init_weights=False,
                         inception_blocks=[nb] + [tvi.InceptionA, tvi.InceptionB,
                                                  tvi.InceptionC, tvi.InceptionD,
                                                  tvi.InceptionE, tvi.InceptionAux])
    c = net.Conv2d_4a_3x3.conv.out_channels
    for name, cls, kw in MIXED:
        block = cls(Actual(c), conv_block=nb, **kw)
        # Replacing a registered module keeps its place in the state_dict.
        setattr(net, name, block)
        with torch.no_grad():  # its output width: a forward on a tiny input
            c = block.eval()(torch.zeros(1, c, 9, 9)).shape[1]
    net.fc = nn.Linear(c, n_logits)
    return net.eval()


def fid_inception_like(sd):
    """The mirror with the widths of state_dict sd: each channel count of the
    full network maps to the one sd has at that place."""
    full = fid_inception()
    widths = {}
    for name, m in full.named_modules():
        if isinstance(m, nn.Conv2d):
            key = name + ".weight"
            if key not in sd or sd[key].dim() != 4:
                raise ValueError(f"{key} is missing or not a 4-d tensor")
            c = int(sd[key].shape[0])
            if widths.setdefault(m.out_channels, c) != c:
                raise ValueError(f"{key} has {c} outputs, other convs of {m.out_channels} "
                                 f"in the full network have {widths[m.out_channels]}")
    if "fc.weight" not in sd:
        raise ValueError("fc.weight is missing")
    return fid_inception(widths=widths, n_logits=int(sd["fc.weight"].shape[0]))


def forward_blocks(net, x):
    """x (B, 3, 299, 299) in [-1, 1] -> {block name: output} for every name of
    BLOCKS, then 'pool3' (B, 2048) and 'logits' (B, n_logits)."""
    out = {}
    for name in BLOCKS:
        x = getattr(net, name)(x)
        out[name] = x
    out["pool3"] = torch.flatten(net.avgpool(x), 1)
    out["logits"] = net.fc(out["pool3"])
    return out


def state_keys(net):
    """The keys a weights file holds: the state_dict's without BatchNorm's
    num_batches_tracked counters (training bookkeeping, unused in eval)."""
    return [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
