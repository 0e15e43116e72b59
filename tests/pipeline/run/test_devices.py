"""run.json's "devices": what the models a stage holds actually run on, found by walking the stage."""
import torch

from pipeline.run.devices import DeviceLog, models_in, summarise, summary_lines, worker_report


class _Wrapper:  # the shape of VideoVAE / CLIP / Expander: a plain object holding a torch module
    def __init__(self, module):
        self.model = module


class _Stage:
    name = "encode"

    def __init__(self):
        self.model = _Wrapper(torch.nn.Linear(2, 2).to(torch.bfloat16))
        self.text = torch.nn.Embedding(4, 2)  # float32
        self.width = 3


def test_walks_wrappers_and_reports_each_modules_dtype():
    assert models_in(_Stage()) == {"model.model": "cpu bfloat16", "text": "cpu float32"}


def test_a_stage_without_models_reports_nothing():
    class Split:
        name = "split"
        threshold = 3.0

    assert worker_report(Split()) is None


def test_workers_on_the_same_device_are_counted_once_per_model():
    log = DeviceLog()
    for _ in range(3):
        log.add(worker_report(_Stage()))
    log.add(None)
    entries = summarise(log.all())
    assert [(e["model"], e["device"], e["dtype"], e["workers"]) for e in entries] == [
        ("model.model", "cpu", "bfloat16", 3), ("text", "cpu", "float32", 3)]
    assert summary_lines(entries)[0] == ("device: encode (model.model)", "cpu bfloat16 ×3 workers")
