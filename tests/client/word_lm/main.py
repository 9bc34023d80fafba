"""The client's whole life: read a corpus of words, train with its own loop (truncated BPTT,
gradient clipping, plain SGD, learning-rate annealing), save the whole model after each epoch that
improves validation, load it back with torch.load's defaults and an allow-list naming torch's
classes, evaluate on the test split, export to ONNX as written in pytorch/examples.

    python main.py OUT_DIR   # writes OUT_DIR/model.pt, OUT_DIR/model.onnx, OUT_DIR/results.json
"""

import json
import math
import sys
from pathlib import Path

import torch
from model import WordModel
from torch import nn

import scratchrnn.lm.data

out_dir = Path(sys.argv[1])
torch.manual_seed(1111)

# ---- data: words of the bundled text, a dictionary built over all splits, batchified columns
words = scratchrnn.lm.data.read_text().split()[:6000]
vocab = {}
ids = torch.tensor([vocab.setdefault(w, len(vocab)) for w in words])
splits = {"train": ids[:4800], "valid": ids[4800:5400], "test": ids[5400:]}


def batchify(data, bsz):
    nbatch = data.size(0) // bsz
    return data[: nbatch * bsz].view(bsz, -1).t().contiguous()  # (steps, bsz)


train_data = batchify(splits["train"], 8)
val_data, test_data = batchify(splits["valid"], 4), batchify(splits["test"], 4)
bptt = 12


def get_batch(source, i):
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i : i + seq_len], source[i + 1 : i + 1 + seq_len].reshape(-1)


model = WordModel(len(vocab), 16, 16, 2, dropout=0.2)
criterion = nn.NLLLoss()


def evaluate(data_source):
    model.eval()
    total_loss, hidden = 0.0, model.init_hidden(data_source.size(1))
    with torch.no_grad():
        for i in range(0, data_source.size(0) - 1, bptt):
            data, targets = get_batch(data_source, i)
            output, hidden = model(data, hidden)
            total_loss += len(data) * criterion(output, targets).item()
    return total_loss / (len(data_source) - 1)


def train(lr):
    model.train()
    hidden = model.init_hidden(train_data.size(1))
    for i in range(0, train_data.size(0) - 1, bptt):
        data, targets = get_batch(train_data, i)
        hidden = hidden.detach()  # truncated BPTT: forget how the state was produced
        model.zero_grad()
        output, hidden = model(data, hidden)
        criterion(output, targets).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-lr)


# pytorch/examples starts at 20; at that rate this small model's training is chaotic (float32
# rounding grows a thousandfold every few steps, whichever RNN), at 5 it is not.
lr, best_val_loss, val_ppls = 5.0, None, []
for _epoch in range(3):
    train(lr)
    val_loss = evaluate(val_data)
    val_ppls.append(math.exp(val_loss))
    if best_val_loss is None or val_loss < best_val_loss:
        with open(out_dir / "model.pt", "wb") as f:
            torch.save(model, f)
        best_val_loss = val_loss
    else:
        lr /= 4.0

with open(out_dir / "model.pt", "rb") as f:
    allowed = [WordModel, nn.Dropout, nn.Embedding, nn.Linear, nn.RNN, nn.GRU, nn.LSTM]
    with torch.serialization.safe_globals(allowed):
        model = torch.load(f)
    model.rnn.flatten_parameters()

test_loss = evaluate(test_data)

model.eval()
dummy_input = torch.LongTensor(bptt * 1).zero_().view(-1, 1)
hidden = model.init_hidden(1)
torch.onnx.export(model, (dummy_input, hidden), out_dir / "model.onnx")
with torch.no_grad():
    log_probs, h_n = model(dummy_input, hidden)
io = {"input": dummy_input, "hidden": hidden, "log_probs": log_probs, "h_n": h_n}
torch.save(io, out_dir / "onnx_io.pt")

(out_dir / "results.json").write_text(json.dumps({
    "rnn": f"{type(model.rnn).__module__}.{type(model.rnn).__name__}",
    "valid_ppl": val_ppls,
    "test_ppl": math.exp(test_loss),
}))
