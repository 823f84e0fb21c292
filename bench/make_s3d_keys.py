"""Write tests/data/s3d_torchvision_keys.json: every key and shape of torchvision's S3D state_dict.

tests/test_s3d.py checks, without torch, that the Keras `s3d` has exactly one weight per
key (by the naming rule of docs/MODELS.md) with the matching shape. Run it with an
interpreter that has torch and torchvision (never a dependency of this project), e.g.:

    /work/torchvenv/bin/python bench/make_s3d_keys.py

The model is torchvision's `s3d()` at its defaults (3 bands, 400 classes), untrained (no
download); the file lists `{key: shape}` in state_dict order, with the versions used, and
the `(frames, height, width)` of `model.features`' output for a few clip sizes
(`models.s3d.features_shape` must agree, and the smallest clip must leave 2x7x7), and the
kernel, stride, padding and ceil_mode of every max and average pool, by module name.
"""

import json
import os

import torch
import torchvision

OUTPUT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "tests", "data", "s3d_torchvision_keys.json",
)


# (frames, height, width): the minimum S3D takes, one less in each axis, torchvision's
# standard input, and an odd-sized larger clip.
CLIP_SIZES = ((13, 209, 209), (12, 209, 209), (13, 208, 209), (13, 209, 208), (16, 224, 224), (32, 256, 231))


def _triple(value):
    return list(value) if isinstance(value, (list, tuple)) else [value] * 3


def main():
    model = torchvision.models.video.s3d()
    keys = {key: list(value.shape) for key, value in model.state_dict().items()}
    pools = {}
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.MaxPool3d, torch.nn.AvgPool3d)):
            pools[name] = {
                "kind": type(module).__name__,
                **{field: _triple(getattr(module, field)) for field in ("kernel_size", "stride", "padding")},
                "ceil_mode": module.ceil_mode,
            }
    model.eval()
    features_shapes = []
    with torch.no_grad():
        for size in CLIP_SIZES:
            features = model.features(torch.zeros(1, 3, *size))
            features_shapes.append([list(size), list(features.shape[2:])])
    document = {
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "num_params": sum(p.numel() for p in model.parameters()),
        "features_shapes": features_shapes,
        "pools": pools,
        "keys": keys,
    }
    # One key per line, so a diff of a new torchvision version reads key by key.
    lines = [f"  {json.dumps(name)}: {json.dumps(value)}" for name, value in document.items() if name != "keys"]
    key_lines = [f"    {json.dumps(key)}: {json.dumps(shape)}" for key, shape in keys.items()]
    lines.append('  "keys": {\n' + ",\n".join(key_lines) + "\n  }")
    with open(OUTPUT, "w") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"wrote {len(keys)} keys ({document['num_params']:,} parameters) to {OUTPUT}")


if __name__ == "__main__":
    main()
