"""What every package below the CLIs shares: the user-error type, atomic writes, output
locks and the TensorFlow environment (oneDNN, quiet import). No TensorFlow import here.

`data_prep`, `models` and `training` all sit above `core`; `core` imports none of them.
"""
