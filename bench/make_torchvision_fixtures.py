"""Writes tests/data/torchvision_tiny/: small torchvision video ResNets saved by real torch.

Needs torch and torchvision (not project dependencies), e.g. the separate venv:

    /work/torchvenv/bin/python bench/make_torchvision_fixtures.py

For each of r3d_18, mc3_18 and r2plus1d_18 it builds a narrow model from torchvision's own
`VideoResNet`, `BasicBlock` and conv builders (`Conv3DSimple`, `Conv3DNoTemporal`,
`Conv2Plus1D`; stems laid out as `BasicStem` / `R2Plus1dStem` with fewer channels), gives
it random weights and random batch-norm statistics, and saves its `state_dict` twice:
`<arch>.pth` (torch's zip format, the default) and `<arch>_legacy.pth` (the pre-1.6
pickle format). `logits.npz` holds the uint8 clips (channels-last, as our models take
them) and torch's float32 logits for each model in eval mode, on clips preprocessed the
way torchvision's `VideoClassification` preset does after its resize and crop (RGB, /255,
Kinetics mean and std). `layouts*.pth` hold a few tensors with storage offsets, strides,
float16, float64 and int64 to test the reader; `wrapped*.pth` the same under
`{"state_dict": {"module.<key>": ...}, "epoch": 3}`. `models.resnet3d.video_resnet18` builds
the same models with `TINY_WIDTHS` below (tests/test_pretrained.py repeats them).
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.video import resnet as tv_resnet

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
TINY_WIDTHS = {
    "stem_planes": 8,
    "stem_midplanes": 6,
    "stage_planes": (8, 16, 24, 32),
    "blocks_per_stage": (2, 1, 1, 1),
}
NUM_CLASSES = 5
CLIP_SHAPE = (2, 8, 32, 32, 3)  # batch, frames, height, width, bands
ARCHS = {
    "r3d_18": ("basic", [tv_resnet.Conv3DSimple] * 4),
    "mc3_18": ("basic", [tv_resnet.Conv3DSimple] + [tv_resnet.Conv3DNoTemporal] * 3),
    "r2plus1d_18": ("r2plus1d", [tv_resnet.Conv2Plus1D] * 4),
}


def _stem(kind, planes, midplanes):
    # BasicStem / R2Plus1dStem with `planes` (and `midplanes`) instead of 64 (and 45).
    if kind == "basic":
        return nn.Sequential(
            nn.Conv3d(3, planes, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(planes),
            nn.ReLU(inplace=True),
        )
    return nn.Sequential(
        nn.Conv3d(3, midplanes, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(midplanes),
        nn.ReLU(inplace=True),
        nn.Conv3d(midplanes, planes, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(planes),
        nn.ReLU(inplace=True),
    )


class NarrowVideoResNet(tv_resnet.VideoResNet):
    """torchvision's VideoResNet with its stage widths 64..512 replaced by `stage_planes`."""

    def __init__(self, conv_makers, stem_kind, num_classes, stem_planes, stem_midplanes, stage_planes, blocks_per_stage):
        self._width_of = dict(zip((64, 128, 256, 512), stage_planes))
        self._stem_planes = stem_planes
        super().__init__(
            tv_resnet.BasicBlock,
            conv_makers,
            list(blocks_per_stage),
            lambda: _stem(stem_kind, stem_planes, stem_midplanes),
            num_classes=num_classes,
        )
        self.fc = nn.Linear(stage_planes[-1], num_classes)

    def _make_layer(self, block, conv_builder, planes, blocks, stride=1):
        if planes == 64:
            self.inplanes = self._stem_planes
        return super()._make_layer(block, conv_builder, self._width_of[planes], blocks, stride)


def randomise(model, generator):
    """Random weights everywhere and batch-norm statistics far from (0, 1), so a wrong
    mapping of any tensor shows in the logits."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=generator)))
            elif isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.5)
    return model.eval()


def torchvision_input(clips_uint8):
    """(B, T, H, W, C) uint8 -> (B, C, T, H, W) float32 as torchvision's preset normalises."""
    x = torch.from_numpy(clips_uint8).permute(0, 4, 1, 2, 3).float() / 255.0
    mean = torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(KINETICS_STD).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def save_both_formats(state_dict, out_dir, stem):
    torch.save(state_dict, out_dir / f"{stem}.pth")
    torch.save(state_dict, out_dir / f"{stem}_legacy.pth", _use_new_zipfile_serialization=False)


def layout_tensors():
    """Tensors whose storages the reader must slice: offsets, strides, shared storage."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "transposed": base.t(),  # strides (1, 6)
        "offset_row": base[2],  # offset 12
        "strided": base[:, ::2],  # strides (6, 2)
        "half": torch.linspace(-2, 2, 7).half(),
        "double": torch.linspace(-2, 2, 5).double(),
        "int64": torch.tensor([3, -1, 7], dtype=torch.int64),
        "scalar": torch.tensor(11, dtype=torch.int64),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/data/torchvision_tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)

    rng = np.random.default_rng(args.seed)
    clips = rng.integers(0, 256, CLIP_SHAPE, dtype=np.uint8)
    arrays = {"clips": clips}
    for arch, (stem_kind, conv_makers) in ARCHS.items():
        model = randomise(NarrowVideoResNet(conv_makers, stem_kind, NUM_CLASSES, **TINY_WIDTHS), generator)
        with torch.no_grad():
            arrays[f"logits_{arch}"] = model(torchvision_input(clips)).numpy()
        save_both_formats(model.state_dict(), args.out, arch)
        print(arch, sum(p.numel() for p in model.parameters()), "parameters")
    layouts = layout_tensors()
    save_both_formats(layouts, args.out, "layouts")
    for name, tensor in layouts.items():
        arrays[f"layout_{name}"] = tensor.numpy()
    # A training script's checkpoint: the state_dict of a DataParallel model under "state_dict".
    wrapped = {"state_dict": {f"module.{k}": v for k, v in layouts.items()}, "epoch": 3}
    save_both_formats(wrapped, args.out, "wrapped")
    np.savez(args.out / "logits.npz", **arrays)
    print("wrote", sorted(p.name for p in args.out.iterdir()))


if __name__ == "__main__":
    main()
