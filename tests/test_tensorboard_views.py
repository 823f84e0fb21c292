"""Tests for training.tensorboard_views: the factory turns `tensorboard:` keys into views."""

import dataclasses

import numpy as np
import pytest

from training import tensorboard_views as views
from training.config import TensorBoardConfig

ALL_OFF = TensorBoardConfig(histograms=False, graph=False, clip_images=0,
                            confusion_matrix=False, deform_offsets=False)


def view_inputs(tmp_path, **overrides):
    fields = dict(writers=views.Writers(str(tmp_path)), class_names=["a", "b"],
                  drawn_metric=object(), multi_label=False,
                  sample_clips={"train": ([], [])},
                  offset_sample=np.zeros((1, 4, 8, 8, 3), np.uint8))
    return views.ViewInputs(**{**fields, **overrides})


def kinds(callbacks):
    return [type(callback) for callback in callbacks]


def test_every_config_key_has_a_view_and_every_view_a_key():
    keys = {field.name for field in dataclasses.fields(TensorBoardConfig)}
    assert set(views.VIEWS) == keys - set(views.PICTURE_KEYS)


def test_with_every_key_off_only_the_scalars_are_written(tmp_path):
    assert kinds(views.tensorboard_callbacks(ALL_OFF, view_inputs(tmp_path))) == [
        views.EpochScalars, views.StepLearningRate]
    assert kinds(views.tensorboard_callbacks(ALL_OFF, view_inputs(tmp_path),
                                             learning_rate_every=0)) == [views.EpochScalars]


@pytest.mark.parametrize("key, value, kind", [
    ("histograms", True, views.WeightHistograms),
    ("graph", True, views.ModelGraph),
    ("clip_images", 3, views.InputClips),
    ("confusion_matrix", True, views.ConfusionMatrix),
    ("deform_offsets", True, views.DeformOffsets),
])
def test_each_key_turns_on_its_view(tmp_path, key, value, kind):
    config = dataclasses.replace(ALL_OFF, **{key: value})
    assert kinds(views.tensorboard_callbacks(config, view_inputs(tmp_path)))[2:] == [kind]


def test_views_follow_the_run_multi_label_and_missing_inputs(tmp_path):
    everything = TensorBoardConfig()
    multi = kinds(views.tensorboard_callbacks(everything, view_inputs(tmp_path,
                                                                      multi_label=True)))
    assert views.PerClassAveragePrecision in multi and views.ConfusionMatrix not in multi
    bare = kinds(views.tensorboard_callbacks(everything, view_inputs(
        tmp_path, drawn_metric=None, offset_sample=None)))
    assert views.ConfusionMatrix not in bare and views.DeformOffsets not in bare
    assert views.WeightHistograms in bare and views.InputClips in bare
