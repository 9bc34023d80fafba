"""The language model with the options of docs/options.md: flags generated from TrainConfig, a
tiny run with each cell and option, the checkpoint rebuilding it, and resume refusing a change."""

from __future__ import annotations

import pytest
import torch

from scratchrnn.apps.cli import build_parser
from scratchrnn.core.modules import GRU, RNN
from scratchrnn.lm.checkpoint import load_model
from scratchrnn.lm.config import TrainConfig
from scratchrnn.lm.rundir import resume_config
from scratchrnn.lm.train import Trainer, train


def tiny(corpus, out, **kw) -> TrainConfig:
    settings = dict(
        data=corpus, out=str(out), embedding_dim=8, hidden_size=16, batch_size=4, seq_len=8,
        max_steps=6, time_budget=None, warmup_steps=2, lr=1e-2, eval_interval=3, eval_streams=4,
        log_interval=1, sample_length=10, progress=False,
    )
    settings.update(kw)
    return TrainConfig(**settings)


def test_flags_are_generated_from_the_config():
    args = build_parser().parse_args(
        ["train", "--cell", "gru", "--nonlinearity", "gelu", "--layer-norm", "--recurrent-dropout", "0.2",
         "--weight-drop", "0.3", "--zoneout", "0.1"])
    assert (args.cell, args.nonlinearity, args.layer_norm, args.recurrent_dropout, args.weight_drop,
            args.zoneout) == ("gru", "gelu", True, 0.2, 0.3, 0.1)


@pytest.mark.parametrize("kw", [
    {"cell": "gru", "zoneout": 0.1, "weight_drop": 0.2},
    {"cell": "rnn", "nonlinearity": "gelu", "layer_norm": True, "recurrent_dropout": 0.2, "zoneout": 0.1},
], ids=["gru", "rnn-options"])
def test_a_tiny_run_with_options_trains_saves_and_resumes_only_unchanged(corpus, tmp_path, kw):
    result = train(tiny(corpus, tmp_path, **kw))
    assert result.step == 6
    model, _ = load_model(tmp_path / "checkpoint.pt")[:2]
    rnn = model.rnn
    assert isinstance(rnn, GRU if kw.get("cell") == "gru" else RNN)
    assert rnn.zoneout == kw["zoneout"] and rnn.layer_norm == kw.get("layer_norm", False)
    with pytest.raises(ValueError, match="zoneout cannot change"):
        Trainer(tiny(corpus, tmp_path, **(kw | {"zoneout": 0.3}), max_steps=10), resume=True)
    assert train(resume_config(tmp_path, max_steps=9), resume=True).step == 9


def test_bad_options_are_refused_before_training(corpus, tmp_path):
    for kw, message in [({"zoneout": 1.0}, r"zoneout should be a number in range \[0, 1\)"),
                        ({"cell": "gru", "layer_norm": True}, "layer_norm: the gru cell takes none"),
                        ({"backend": "torch", "weight_drop": 0.1}, "weight_drop: backend torch"),
                        ({"cell": "lstm"}, "unknown cell 'lstm'")]:
        with pytest.raises(ValueError, match=message):
            tiny(corpus, tmp_path, **kw).validate()


def test_the_default_cell_is_the_gru_which_takes_no_rnn_option(corpus, tmp_path):
    assert TrainConfig().cell == "gru"  # lowest validation loss in make run's 180 s (lab options)
    with pytest.raises(ValueError, match=r"layer_norm: the gru cell takes none .*--cell rnn"):
        tiny(corpus, tmp_path, layer_norm=True).validate()


def test_a_run_saved_before_the_cell_was_recorded_resumes_as_the_rnn(corpus, tmp_path):
    # Checkpoints written before the cell setting existed hold an Elman RNN and no "cell".
    train(tiny(corpus, tmp_path, cell="rnn"))
    path = tmp_path / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["train_config"]["cell"]
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r"cell cannot change.*the run has 'rnn', got 'gru'"):
        Trainer(tiny(corpus, tmp_path, max_steps=9), resume=True)  # today's default cell
    config = resume_config(tmp_path, max_steps=9)
    assert config.cell == "rnn"
    assert train(config, resume=True).step == 9
