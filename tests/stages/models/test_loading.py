"""Devices are never silent: a stage that reserved a GPU but sees no CUDA says so, or fails when told to."""
from __future__ import annotations

import logging

import pytest
import torch

from stages.base import Resources
from stages.models import loading
from stages.models.loading import device_for


@pytest.fixture(autouse=True)
def fresh_worker(monkeypatch):
    monkeypatch.setattr(loading, "_SAID", set())  # each test is a new worker
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU torch, as on a broken GPU node


def test_a_reserved_gpu_without_cuda_warns_once_and_runs_on_cpu(caplog):
    with caplog.at_level(logging.INFO, logger="vidprep"):
        assert device_for(Resources(gpus=0.5), "caption") == "cpu"
        assert device_for(Resources(gpus=0.5), "caption") == "cpu"
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "stage caption reserved 0.5 GPU but torch" in warnings[0]
    assert "stage caption: device cpu" in caplog.text


def test_require_gpu_turns_the_fallback_into_an_error():
    with pytest.raises(RuntimeError, match="resources.require_gpu is set"):
        device_for(Resources(gpus=1, require_gpu=True), "encode")


def test_no_gpu_asked_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="vidprep"):
        assert device_for(Resources(gpus=0), "clip_score") == "cpu"
    assert not caplog.records


def test_a_revision_pins_hub_ids_and_a_folder_is_recorded_as_itself(tmp_path):
    from stages.models.loading import hub_revision, model_label

    commit = "0c351dd01ed87e9c1b53cbc748cba10e6187ff3b"
    assert (hub_revision("Qwen/Qwen3-VL-8B-Instruct", commit), model_label("Qwen/Qwen3-VL-8B-Instruct", commit)) == \
        (commit, f"Qwen/Qwen3-VL-8B-Instruct@{commit}")
    assert (hub_revision(str(tmp_path), commit), model_label(str(tmp_path), commit)) == (None, str(tmp_path))
    assert model_label("Qwen/Qwen3-4B-Instruct-2507", None) == "Qwen/Qwen3-4B-Instruct-2507"
