"""The client's model, written as a pytorch/examples-style word language model would write it:
an embedding, a stacked RNN, a linear decoder, dropout in between.

The one edit that swaps the RNN is the import below (the test makes it):
``from torch.nn import RNN`` → ``from scratchrnn import RNN``.
"""

import torch.nn.functional as F
from torch import nn
from torch.nn import RNN


class WordModel(nn.Module):
    def __init__(self, ntoken, ninp, nhid, nlayers, dropout=0.2, nonlinearity="tanh"):
        super().__init__()
        self.ntoken, self.nhid, self.nlayers = ntoken, nhid, nlayers
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = RNN(ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout)
        self.decoder = nn.Linear(nhid, ntoken)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, input, hidden):
        emb = self.drop(self.encoder(input))  # (T, N, ninp)
        output, hidden = self.rnn(emb, hidden)  # (T, N, nhid), (nlayers, N, nhid)
        decoded = self.decoder(self.drop(output)).view(-1, self.ntoken)
        return F.log_softmax(decoded, dim=1), hidden

    def init_hidden(self, bsz):
        weight = next(self.parameters())
        return weight.new_zeros(self.nlayers, bsz, self.nhid)
