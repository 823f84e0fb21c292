"""training.distribution: a process's role in a multi-worker cluster, from TF_CONFIG."""

import json

import pytest

from core.errors import UserError
from training.distribution import read_worker_role


def tf_config(cluster, task_type, index):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


@pytest.mark.parametrize("cluster, task_type, index, expected", [
    # (is_chief, num_workers, input_pipeline_id): the chief reads the first files.
    ({"worker": ["h0:1", "h1:1", "h2:1"]}, "worker", 0, (True, 3, 0)),
    ({"worker": ["h0:1", "h1:1", "h2:1"]}, "worker", 2, (False, 3, 2)),
    ({"chief": ["c:1"], "worker": ["h0:1", "h1:1"]}, "chief", 0, (True, 3, 0)),
    ({"chief": ["c:1"], "worker": ["h0:1", "h1:1"]}, "worker", 0, (False, 3, 1)),
    ({"chief": ["c:1"], "worker": ["h0:1", "h1:1"]}, "worker", 1, (False, 3, 2)),
])
def test_role_and_input_pipeline_id(cluster, task_type, index, expected):
    role = read_worker_role(tf_config(cluster, task_type, index))
    assert (role.is_chief, role.num_workers, role.input_pipeline_id) == expected
    assert role.name == f"{task_type}:{index}"


def test_every_worker_gets_its_own_input_pipeline():
    cluster = {"chief": ["c:1"], "worker": ["h0:1", "h1:1", "h2:1"]}
    roles = [read_worker_role(tf_config(cluster, "chief", 0))] + [
        read_worker_role(tf_config(cluster, "worker", i)) for i in range(3)]
    assert sorted(role.input_pipeline_id for role in roles) == [0, 1, 2, 3]


@pytest.mark.parametrize("value", [None, "", "not json", tf_config({"worker": ["h:1"]}, "ps", 0),
                                   tf_config({"chief": ["a:1", "b:1"]}, "chief", 0)])
def test_bad_tf_config_is_a_user_error(value):
    with pytest.raises(UserError, match="TF_CONFIG"):
        read_worker_role(value)
