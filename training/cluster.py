"""This process's place in a multi-worker cluster, read from the TF_CONFIG environment variable.

Pure Python (no TensorFlow), so train.py can decide where a worker writes before TensorFlow
starts. TF_CONFIG is TensorFlow's own format, e.g. for worker 1 of 2:
`{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 1}}`.
The chief is task "chief" if the cluster has one, otherwise worker 0 (TensorFlow's rule).
"""

import dataclasses
import json

from data_prep.errors import UserError


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    task_type: str
    task_index: int
    num_workers: int  # every task that trains: chief plus workers
    is_chief: bool
    input_pipeline_id: int = 0  # 0..num_workers-1: the chief first, then the workers


    @property
    def name(self):
        return f"{self.task_type}:{self.task_index}"


def read_worker_role(tf_config):
    """Parses the TF_CONFIG string (None if unset) into a WorkerRole.

    Raises:
        UserError: TF_CONFIG missing, not JSON, or naming a task outside its cluster.
    """
    example = ('{"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    if not tf_config:
        raise UserError("distribute.strategy: multi_worker expects the TF_CONFIG environment "
                        f"variable to describe the cluster, e.g. TF_CONFIG='{example}'. "
                        "Received: TF_CONFIG unset")
    try:
        parsed = json.loads(tf_config)
        cluster, task = parsed["cluster"], parsed["task"]
        task_type, task_index = task["type"], int(task["index"])
        trainers = {kind: list(cluster.get(kind, [])) for kind in ("chief", "worker")}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UserError(f"TF_CONFIG expects JSON like {example}. Received: "
                        f"TF_CONFIG={tf_config!r}") from None
    if len(trainers["chief"]) > 1 or not any(trainers.values()):
        raise UserError("TF_CONFIG expects a cluster with at most one chief and at least one "
                        f"worker address. Received: TF_CONFIG={tf_config!r}")
    if task_type not in trainers or not 0 <= task_index < len(trainers[task_type]):
        raise UserError("TF_CONFIG's task expects a type (chief or worker) and an index inside "
                        f"the cluster's list. Received: TF_CONFIG={tf_config!r}")
    is_chief = task_type == "chief" or (not trainers["chief"] and task_index == 0)
    pipeline_id = task_index + (len(trainers["chief"]) if task_type == "worker" else 0)
    return WorkerRole(task_type, task_index, len(trainers["chief"]) + len(trainers["worker"]),
                      is_chief, pipeline_id)
