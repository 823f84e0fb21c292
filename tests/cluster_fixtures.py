"""Helpers for tests that start a multi-worker cluster on this machine."""

import json
import os
import socket


def free_ports(count):
    """`count` TCP ports on 127.0.0.1 that were free a moment ago (for TF_CONFIG addresses)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def worker_env(addresses, index, **extra):
    """The environment of worker `index` of a cluster of `addresses` (TF_CONFIG set)."""
    tf_config = {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}}
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_CONFIG": json.dumps(tf_config),
            **extra}
