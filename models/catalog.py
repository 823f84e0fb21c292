"""Model names and the options each accepts: the table `build_model` and the config share.

This module imports only the standard library (no Keras, so no TensorFlow): `training.config` reads it to reject
a mistyped `model.name` or option in milliseconds, before a run loads TensorFlow or creates
its directory. `models.build` checks the same table again when it builds.
"""

import difflib

COMMON_OPTIONS = ("mean", "std", "dropout")
DEFORMABLE_OPTIONS = ("deformable_stages", "offset_groups", "modulated")

# name -> every option its builder accepts (`build_model` documents each one).
MODEL_OPTIONS = {
    "small3d": COMMON_OPTIONS + DEFORMABLE_OPTIONS + ("frame_differences",),
    "frames_as_channels": COMMON_OPTIONS,
    "c3d": COMMON_OPTIONS + DEFORMABLE_OPTIONS,
    "r3d_18": COMMON_OPTIONS + DEFORMABLE_OPTIONS,
    "mc3_18": COMMON_OPTIONS + DEFORMABLE_OPTIONS,
    "r2plus1d_18": COMMON_OPTIONS + DEFORMABLE_OPTIONS,
    "s3d": COMMON_OPTIONS,
    "movinet_a0": COMMON_OPTIONS,
    "movinet_a1": COMMON_OPTIONS,
    "movinet_a2": COMMON_OPTIONS,
    "movinet_a0_stream": COMMON_OPTIONS,
    "movinet_a1_stream": COMMON_OPTIONS,
    "movinet_a2_stream": COMMON_OPTIONS,
}
MODEL_NAMES = tuple(MODEL_OPTIONS)
# The parameter groups of every model, for per-group learning rates (models.finetune).
PARAMETER_GROUPS = ("head", "backbone", "offsets")


def closest(word, choices):
    """The choice nearest to a mistyped `word` (difflib's), or None."""
    found = difflib.get_close_matches(str(word), list(choices), n=1)
    return found[0] if found else None


def check_model_choice(name, options):
    """Raises ValueError for an unknown model name or an option `name` does not accept.

    Args:
        name: str, a model name.
        options: dict, the model options (only their names are checked here).

    Example:

    >>> check_model_choice("r3d18", {})
    Traceback (most recent call last):
    ...
    ValueError: Unknown model name — did you mean r3d_18? Expected one of ['small3d', \
'frames_as_channels', 'c3d', 'r3d_18', 'mc3_18', 'r2plus1d_18', 's3d', 'movinet_a0', \
'movinet_a1', 'movinet_a2', 'movinet_a0_stream', 'movinet_a1_stream', 'movinet_a2_stream']. \
Received: name='r3d18'
    """
    if name not in MODEL_OPTIONS:
        near = closest(name, MODEL_NAMES)
        hint = f" — did you mean {near}?" if near else "."
        raise ValueError(f"Unknown model name{hint} Expected one of {list(MODEL_NAMES)}. "
                         f"Received: name={name!r}")
    accepted = MODEL_OPTIONS[name]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        near = closest(unknown[0], accepted)
        hint = f" — did you mean {near}?" if near else "."
        raise ValueError(f"Unknown option(s) {unknown} for model {name!r}{hint} Expected any "
                         f"of {list(accepted)}. Received: options={options!r}")
