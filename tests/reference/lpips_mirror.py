"""PyTorch mirror of the LPIPS distance of vae/lpips.c: LPIPS v0.1 on VGG16
(richzhang/PerceptualSimilarity, lpips.LPIPS(net='vgg') in eval mode), for
images in [-1, 1]:
  - scaling layer (x - shift) / scale, shift (-.030, -.088, -.188),
    scale (.458, .448, .450);
  - torchvision's vgg16().features[0:30], tapped after relu1_2, relu2_2,
    relu3_3, relu4_3, relu5_3 (indices 3, 8, 15, 22, 29);
  - per tap: f / (sqrt(sum_c f^2) + 1e-10), squared difference, a 1x1 conv
    without bias to one channel (lin<l>.model.1, after LPIPS's Dropout, idle
    in eval mode), mean over the pixels; the sum over the five taps.

The state_dict keys are those of the HDF5 file C loads
(features.<i>.weight/bias, torchvision's; lin<l>.model.1.weight, LPIPS's
vgg.pth). Narrow test networks take other stage widths; at VGG16's widths the
features are torchvision's own module. Imported by gen_lpips.py and
convert_lpips.py; keep it free of side effects.
"""
import torch
import torch.nn as nn
import torchvision

VGG16_WIDTHS = (64, 128, 256, 512, 512)
STAGE_CONVS = (2, 2, 3, 3, 3)
CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
TAPS = (3, 8, 15, 22, 29)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10


def vgg_features(widths):
    """VGG16's features up to relu5_3 with the given stage widths, with
    torchvision's module indices."""
    if tuple(widths) == VGG16_WIDTHS:
        return torchvision.models.vgg16(weights=None).features[:30]
    layers, cin = [], 3
    for s, n in enumerate(STAGE_CONVS):
        if s:
            layers.append(nn.MaxPool2d(2, 2))
        for _ in range(n):
            layers += [nn.Conv2d(cin, widths[s], 3, padding=1), nn.ReLU()]
            cin = widths[s]
    return nn.Sequential(*layers)


class NetLinLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))

    def forward(self, x):
        return self.model(x)


def normalize(f):
    return f / (torch.sqrt(torch.sum(f ** 2, dim=1, keepdim=True)) + EPS)


class LPIPS(nn.Module):
    def __init__(self, widths=VGG16_WIDTHS):
        super().__init__()
        self.widths = tuple(widths)
        self.features = vgg_features(widths)
        for l, c in enumerate(widths):
            setattr(self, f"lin{l}", NetLinLayer(c))
        self.register_buffer("shift", torch.tensor(SHIFT)[None, :, None, None], persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE)[None, :, None, None], persistent=False)
        self.eval()

    def taps(self, x):
        out, h = [], (x - self.shift) / self.scale
        for i, m in enumerate(self.features):
            h = m(h)
            if i in TAPS:
                out.append(h)
        return out

    def forward(self, x, xhat):
        """Returns (distance (B), per-layer terms (B, 5))."""
        terms = []
        for l, (f0, f1) in enumerate(zip(self.taps(x), self.taps(xhat))):
            d = (normalize(f0) - normalize(f1)) ** 2
            terms.append(getattr(self, f"lin{l}")(d).mean(dim=(2, 3))[:, 0])
        terms = torch.stack(terms, dim=1)
        return terms.sum(dim=1), terms


def widths_of(sd):
    """The stage widths a state_dict's features declare (the first conv of
    each stage)."""
    firsts = [CONV_INDEX[sum(STAGE_CONVS[:s])] for s in range(5)]
    return tuple(int(sd[f"features.{i}.weight"].shape[0]) for i in firsts)
