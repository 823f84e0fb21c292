"""Which precision a run computes in: float32, or mixed bfloat16/float16 where the hardware has it.

`train.mixed_precision` (training/config.py) is one of:
- `auto` (the default): `mixed_bfloat16` on a CPU with AMX-BF16 or AVX512-BF16 when
  TensorFlow runs oneDNN (its bfloat16 kernels; measured 2.4x faster than float32 for an r3d_18
  step, docs/BENCHMARKS.md), `mixed_float16` on a GPU of compute capability >= 7.0 (tensor
  cores; Keras adds loss scaling at compile), float32 everywhere else: without the hardware,
  bfloat16 is slower than float32 (TensorFlow issues #42422, #45441);
- `true`: mixed precision in the type the device has kernels for, hardware or not
  (`mixed_float16` on a GPU, `mixed_bfloat16` on a CPU: TensorFlow's CPU has no float16
  MaxPool3D); `false`: float32;
- a Keras policy name: `float32`, `mixed_bfloat16`, `mixed_float16`.

Mixed policies keep variables, BatchNorm statistics, the logits and the loss in float32
(`with_float32_logits`), and DeformConv3D samples in float32 (models/deform_conv3d.py).
`choose_policy` takes the CPU flags, oneDNN state and GPU compute capabilities as arguments
(None = this machine's), so a test can stand in for any machine.

>>> choose_policy("auto", cpu_flags={"avx512_bf16"}, onednn=True, gpu_capabilities=[]).policy
'mixed_bfloat16'
>>> choose_policy("auto", cpu_flags={"avx2"}, onednn=True, gpu_capabilities=[]).policy
'float32'
"""

import dataclasses
import logging

import keras
import tensorflow as tf

from core.tensorflow_env import onednn_enabled

logger = logging.getLogger(__name__)

POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
SETTINGS = ("auto", "true", "false", *POLICIES)
# /proc/cpuinfo flags of the bfloat16 instructions oneDNN uses: AMX tiles (Sapphire Rapids and
# later) and AVX-512 BF16 (Cooper Lake, AMD Zen 4 and later).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
MIN_FLOAT16_CAPABILITY = (7, 0)  # Volta: the first tensor cores
LOGITS_LAYER = "logits_float32"


@dataclasses.dataclass(frozen=True)
class PrecisionChoice:
    """The Keras policy a run uses, the setting it came from, and why (for the log line)."""

    policy: str
    setting: str
    reason: str

    def describe(self):
        return f"precision {self.policy} (train.mixed_precision={self.setting}: {self.reason})"


def read_cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags (the first `flags` line of /proc/cpuinfo); empty where the file
    does not exist (not Linux), which `auto` then treats as a CPU without bfloat16."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "flags":
                    return set(value.split())
    except OSError:
        pass
    return set()


def gpu_compute_capabilities():
    """[(major, minor)] of the GPUs TensorFlow sees ((0, 0) when it does not say)."""
    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capabilities.append(tuple(details.get("compute_capability") or (0, 0)))
    return capabilities


def normalize_setting(setting):
    """`setting` as one of SETTINGS (YAML booleans become "true"/"false").

    Raises:
        ValueError: for anything else.
    """
    if isinstance(setting, bool):
        return "true" if setting else "false"
    if isinstance(setting, str) and setting.lower() in SETTINGS:
        return setting.lower()
    raise ValueError(f"train.mixed_precision expects one of {', '.join(SETTINGS)}. "
                     f"Received: train.mixed_precision={setting!r}")


def choose_policy(setting, *, cpu_flags=None, onednn=None, gpu_capabilities=None):
    """The PrecisionChoice for `setting` on this machine (or the one the arguments describe).

    Args:
        setting: one of SETTINGS, or a bool.
        cpu_flags: set of CPU flag names; None reads /proc/cpuinfo.
        onednn: bool, whether TensorFlow runs oneDNN; None asks TensorFlow.
        gpu_capabilities: list of (major, minor), one per GPU; None asks TensorFlow.

    Returns:
        PrecisionChoice.

    Raises:
        ValueError: `setting` is not one of SETTINGS.
    """
    setting = normalize_setting(setting)
    if setting == "false":
        return PrecisionChoice("float32", setting, "mixed precision off")
    if setting in POLICIES:
        return PrecisionChoice(setting, setting, "chosen by name")
    if gpu_capabilities is None:
        gpu_capabilities = gpu_compute_capabilities()
    if setting == "true":
        if gpu_capabilities:
            return PrecisionChoice("mixed_float16", setting, "GPU: float16 compute, loss scaling")
        return PrecisionChoice("mixed_bfloat16", setting,
                               "CPU: bfloat16 (TensorFlow's CPU has no float16 MaxPool3D)")
    if gpu_capabilities:
        best = max(gpu_capabilities)
        if best >= MIN_FLOAT16_CAPABILITY:
            return PrecisionChoice("mixed_float16", setting,
                                   f"GPU of compute capability {best[0]}.{best[1]} has float16 "
                                   "tensor cores; loss scaling on")
        return PrecisionChoice("float32", setting,
                               f"GPU of compute capability {best[0]}.{best[1]} < 7.0 has no "
                               "float16 tensor cores")
    if cpu_flags is None:
        cpu_flags = read_cpu_flags()
    if onednn is None:
        onednn = bool(onednn_enabled())
    found = [flag for flag in BF16_CPU_FLAGS if flag in cpu_flags]
    if not found:
        return PrecisionChoice("float32", setting, "this CPU has neither AMX-BF16 nor "
                                                   "AVX512-BF16; bfloat16 would be slower")
    if not onednn:
        return PrecisionChoice("float32", setting, f"CPU has {'+'.join(found)} but oneDNN is "
                                                   "off (TF_ENABLE_ONEDNN_OPTS=0)")
    return PrecisionChoice("mixed_bfloat16", setting, f"CPU has {'+'.join(found)}, oneDNN on")


def set_policy(choice):
    """Sets Keras's global dtype policy to `choice.policy` and logs the one line saying why."""
    keras.mixed_precision.set_global_policy(choice.policy)
    logger.info(choice.describe())


def with_float32_logits(model):
    """`model` with its outputs cast to float32 (a no-op float32 layer) when it computes in
    a lower precision: float16 logits overflow in the softmax, and top-k metrics and the loss
    want float32."""
    if model.compute_dtype == "float32" or model.layers[-1].name == LOGITS_LAYER:
        return model
    logits = keras.layers.Activation("linear", dtype="float32", name=LOGITS_LAYER)(
        model.outputs[0])
    return keras.Model(model.inputs[0], logits, name=model.name)


def _replace_policies(config, policy):
    """A copy of a Keras config with every mixed dtype policy replaced by `policy`."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and \
                str(config.get("config", {}).get("name", "")).startswith("mixed_"):
            return {**config, "config": {**config["config"], "name": policy}}
        return {key: _replace_policies(value, policy) for key, value in config.items()}
    if isinstance(config, list):
        return [_replace_policies(value, policy) for value in config]
    return config


def model_with_policy(model, policy):
    """`model`, or a copy with the same weights whose mixed layers compute in `policy`.

    Variables are float32 under every policy, so the weights carry over exactly. Used where a
    trained model runs on (export: float32, evaluation and prediction: this machine's `auto`).
    """
    mixed = any(layer.dtype_policy.name.startswith("mixed_") for layer in model.layers)
    if not mixed or (policy != "float32" and all(
            layer.dtype_policy.name in (policy, "float32") for layer in model.layers)):
        return model
    copy = model.__class__.from_config(_replace_policies(model.get_config(), policy))
    copy.set_weights(model.get_weights())
    return copy
