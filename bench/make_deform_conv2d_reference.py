"""Write tests/data/deform_conv2d_torchvision.npz: torchvision.ops.deform_conv2d outputs.

The fixture lets tests/test_deform_conv3d.py check, without torch, that deform_conv3d with
a (1, kh, kw) kernel and dt = 0 is torchvision's deform_conv2d on each frame, offset
groups and mask included. Run it with an interpreter that has torch and torchvision
(never a dependency of this project), e.g.:

    /work/venv-torch/bin/python bench/make_deform_conv2d_reference.py

Arrays are float32 in torchvision's layout (N, C, H, W) with N = B * D frames; the test
converts them to channels-last. Kept under 50 KB.
"""

import os

import numpy as np
import torch
import torchvision

OUTPUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "tests", "data", "deform_conv2d_torchvision.npz",
)

# name: (frames N, channels, height, width, filters, offset groups, masked, stride, pad, dilation)
CASES = {
    "groups2_mask_same": (4, 4, 5, 6, 3, 2, True, 1, 1, 1),
    "stride2_same_odd": (4, 3, 5, 7, 2, 1, False, 2, 1, 1),
    "dilation2_valid_mask": (2, 2, 6, 7, 2, 1, True, 1, 0, 2),
}


def main():
    torch.manual_seed(0)
    arrays = {"torch_version": np.array(torch.__version__),
              "torchvision_version": np.array(torchvision.__version__)}
    for name, (frames, channels, height, width, filters, groups, masked, stride, pad,
               dilation) in CASES.items():
        out_h = (height + 2 * pad - dilation * 2 - 1) // stride + 1
        out_w = (width + 2 * pad - dilation * 2 - 1) // stride + 1
        inputs = torch.randn(frames, channels, height, width)
        weight = torch.randn(filters, channels, 3, 3)
        # Scale 2 pixels: plenty of samples land partly or wholly outside the frame.
        offset = 2.0 * torch.randn(frames, groups * 9 * 2, out_h, out_w)
        mask = torch.rand(frames, groups * 9, out_h, out_w) if masked else None
        output = torchvision.ops.deform_conv2d(
            inputs, offset, weight, stride=stride, padding=pad, dilation=dilation, mask=mask
        )
        arrays[f"{name}/inputs"] = inputs.numpy()
        arrays[f"{name}/offset"] = offset.numpy()
        arrays[f"{name}/weight"] = weight.numpy()
        arrays[f"{name}/output"] = output.numpy()
        arrays[f"{name}/params"] = np.array([groups, int(masked), stride, pad, dilation])
        if masked:
            arrays[f"{name}/mask"] = mask.numpy()
    os.makedirs(os.path.dirname(OUTPUT), exist_ok=True)
    np.savez_compressed(OUTPUT, **arrays)
    print(f"wrote {OUTPUT}: {os.path.getsize(OUTPUT)} bytes")


if __name__ == "__main__":
    main()
