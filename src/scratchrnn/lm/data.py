"""Text for the character-level language model: loading, the vocabulary, the split, the batches.

Shapes use the project's letters: T time steps (characters per chunk), N parallel streams (the
batch), V the vocabulary size.

Truncated BPTT over contiguous streams (Karpathy's char-rnn, torch-rnn): the training text is cut
into N equal contiguous streams laid side by side, a (S, N) tensor whose column n is stream n.
Batch k is rows k·T … k·T + T − 1 as input and the same rows shifted by one character as targets,
so stream n of batch k + 1 continues exactly where stream n of batch k stopped, and the hidden
state can be carried from one batch to the next (detached: gradients stop at the chunk boundary).

The split is nanoGPT's: the first 90 % of the characters train, the last 10 % validate, so numbers
compare. The vocabulary is built from the training part only (what the model could have seen);
validation characters outside it are dropped, and the count is logged.

A text file must be a regular file of at most :data:`MAX_TEXT_BYTES` (the ids take 8 bytes a
character in memory); a UTF-8 byte-order mark at its start is not text and is dropped. Before a
byte is read, the memory that reading and encoding it will take (:data:`BYTES_PER_TEXT_BYTE` per
byte of the file, at most) is compared with the memory free, and a file that cannot fit is refused
in one line rather than met by a MemoryError minutes later. :func:`load_corpus` also notes the
file's size and hash (:class:`DataFile`), so that a resumed run can say when its text changed.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
from dataclasses import asdict, dataclass
from importlib import resources

import numpy as np
import torch
from torch import Tensor

from scratchrnn.lm.files import read_regular

__all__ = [
    "BYTES_PER_TEXT_BYTE",
    "MAX_TEXT_BYTES",
    "Corpus",
    "DataFile",
    "StreamBatches",
    "Vocab",
    "available_memory",
    "default_corpus_path",
    "load_corpus",
    "read_text",
    "resolve_data",
    "same_data",
    "split_text",
]

log = logging.getLogger(__name__)

VAL_FRACTION = 0.1
MAX_TEXT_BYTES = 2**30  # 1 GiB of text is 8 GiB of int64 ids
# The most memory a byte of text takes while it is read and made into training batches: the bytes,
# the str (1 to 4 bytes a character: one emoji makes every character 4), the training part's copy,
# the code points, the int64 ids, the batches' streams. Measured on a 50 MB file: 15.4 bytes a byte
# of ASCII, 18.5 with one emoji; 20 leaves a margin.
BYTES_PER_TEXT_BYTE = 20
_BOM = "\ufeff"


def available_memory() -> int | None:
    """The bytes of memory free for new allocations on this machine (None: unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class DataFile:
    """Which text a run trained on: its size and its SHA-256 hash (a changed file shows in either).

    Of the standard library's hashes SHA-256 was the fastest measured here (0.54 GiB/s against
    BLAKE2b's 0.40 on a loaded 2-core Xeon; CPUs with SHA extensions run it in hardware): about
    2 s for the largest file accepted, next to the minutes of encoding and training it. It is
    computed from the bytes already read, so the file is read once.
    """

    bytes: int
    sha256: str

    @classmethod
    def of(cls, raw: bytes) -> DataFile:
        return cls(len(raw), hashlib.sha256(raw).hexdigest())

    def to_dict(self) -> dict:
        return asdict(self)


def _check_memory_for(path: str) -> None:
    """Refuse, before reading it, a text whose ids cannot fit in the memory free."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return  # read_regular says what is wrong with the path
    needed, available = size * BYTES_PER_TEXT_BYTE, available_memory()
    if available is not None and needed > available:
        raise ValueError(f"{path} is {size:,} bytes: reading it and encoding its characters as ids needs "
                         f"about {needed / 1e9:.3g} GB of memory, and {available / 1e9:.3g} GB is available; "
                         "give a smaller file")


def default_corpus_path() -> str:
    """The path of the bundled corpus, tiny Shakespeare (1,115,394 characters, public domain)."""
    return str(resources.files("scratchrnn") / "data" / "tinyshakespeare.txt")


def read_text(path: str | os.PathLike | None = None) -> str:
    """Read a UTF-8 text file (the bundled corpus when ``path`` is None), without a leading BOM.

    Raises:
        OSError: the path is missing, a directory, a loop of symbolic links, or unreadable.
        ValueError: not a regular file, over :data:`MAX_TEXT_BYTES`, or not valid UTF-8.
    """
    return _read_text(path)[0]


def _read_text(path: str | os.PathLike | None) -> tuple[str, DataFile]:
    path = default_corpus_path() if path is None else os.fspath(path)
    _check_memory_for(path)
    raw = read_regular(path, "a text file", MAX_TEXT_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})"
        ) from None
    return text.removeprefix(_BOM), DataFile.of(raw)


def resolve_data(path: str | os.PathLike | None) -> str | None:
    """The absolute path, symbolic links resolved, that a run saves for its text (None: bundled),
    so that the run can be resumed and evaluated from any directory."""
    return None if path is None else os.path.realpath(path)


def same_data(a: str | os.PathLike | None, b: str | os.PathLike | None) -> bool:
    """Whether two names (None: the bundled corpus) are the same file, however they are spelled."""
    a, b = (default_corpus_path() if p is None else os.fspath(p) for p in (a, b))
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them is missing: then they are not the same file
        return False


def split_text(text: str, val_fraction: float = VAL_FRACTION) -> tuple[str, str]:
    """The first (1 − val_fraction) of the characters for training, the rest for validation."""
    n_train = int(len(text) * (1 - val_fraction))
    return text[:n_train], text[n_train:]


class Vocab:
    """The characters a model knows, sorted; character ↔ integer id in [0, V).

    Example:
        >>> vocab = Vocab.from_text("hello")
        >>> vocab.decode(vocab.encode("hole"))
        'hole'
    """

    def __init__(self, chars: str) -> None:
        if not isinstance(chars, str):  # a list could hold whole strings: markup, escapes
            raise ValueError(f"the vocabulary must be a string of characters, got {type(chars).__name__}")
        if not chars:
            raise ValueError("the vocabulary is empty")
        if len(set(chars)) != len(chars):
            raise ValueError("the vocabulary has repeated characters")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.chars == other.chars

    def __repr__(self) -> str:
        return f"Vocab({len(self)} characters)"

    @property
    def start(self) -> str:
        """The character generation starts from without a prompt: a newline if the vocabulary
        has one (text starts after a line break), else its first character."""
        return "\n" if "\n" in self.stoi else self.chars[0]

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` that are not in the vocabulary, sorted."""
        return sorted(set(text) - self.stoi.keys())

    def encode(self, text: str) -> Tensor:
        """(len(text),) int64 ids. Raises ValueError naming any character outside the vocabulary."""
        missing = self.unknown(text)
        if missing:
            shown = "".join(missing[:10])
            raise ValueError(
                f"{len(missing)} character(s) not in the model's vocabulary: {shown!r}"
            )
        return torch.tensor([self.stoi[c] for c in text], dtype=torch.long)

    def encode_known(self, text: str) -> tuple[Tensor, int]:
        """Ids of the characters in the vocabulary, dropping the others; and how many were dropped.

        Vectorised (a table from code point to id): a list of Python ints would take 5 times the
        memory of the ids, and minutes, for a large file."""
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (len(text),)
        codes = np.frombuffer(self.chars.encode("utf-32-le"), dtype=np.uint32)
        size = int(max(codes.max(), points.max(initial=0))) + 1
        table = np.full(size, -1, dtype=np.int64)
        table[codes] = np.arange(len(codes))
        ids = table[points]  # (len(text),) int64, −1 where unknown
        del points
        known = ids >= 0
        dropped = len(ids) - int(known.sum())
        if dropped:
            ids = ids[known]
        return torch.from_numpy(ids), dropped

    def decode(self, ids) -> str:
        """The text of a sequence of ids (a 1-D tensor or any iterable of ints)."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)


@dataclass
class Corpus:
    """A text's vocabulary and its encoded training and validation parts (1-D int64 tensors);
    ``data_file`` the file's size and hash, when it was read from one."""

    vocab: Vocab
    train: Tensor
    val: Tensor
    data_file: DataFile | None = None

    @classmethod
    def from_text(cls, text: str, vocab: Vocab | None = None, name: str = "the corpus") -> Corpus:
        """Split ``text`` 90/10 and encode it; the vocabulary comes from the training part unless
        given (a checkpoint's, when evaluating a trained model on new text)."""
        if len(text) < 2:
            raise ValueError(f"{name} is too short: {len(text)} character(s)")
        train_text, val_text = split_text(text)
        vocab = vocab or Vocab.from_text(train_text)
        train, dropped_train = vocab.encode_known(train_text)
        val, dropped_val = vocab.encode_known(val_text)
        if dropped_train or dropped_val:
            log.warning(
                "%s: %d character(s) outside the vocabulary were dropped", name,
                dropped_train + dropped_val,
            )
        return cls(vocab, train, val)


def load_corpus(path: str | os.PathLike | None = None, vocab: Vocab | None = None) -> Corpus:
    """Read, split and encode a UTF-8 text file (the bundled corpus when ``path`` is None)."""
    name = "the bundled corpus" if path is None else os.fspath(path)
    log.debug("reading and encoding %s", name)
    text, data_file = _read_text(path)
    corpus = Corpus.from_text(text, vocab, name)
    corpus.data_file = data_file
    return corpus


class StreamBatches:
    """Truncated-BPTT batches: N contiguous streams, chunks of T characters.

    Args:
        data: (L,) int64 character ids.
        batch_size: N, the number of parallel streams.
        seq_len: T, the characters per chunk.
        name: how to call the data in errors.

    Batch k (0 ≤ k < len(self)) is ``(x, y)``, both (T, N) int64 and contiguous: ``x[t, n]`` is
    character k·T + t of stream n and ``y[t, n]`` the one after it. Each stream has S = (L − 1) // N
    characters to predict; the < N left over at the end are not used.

    Example:
        >>> batches = StreamBatches(torch.arange(100), batch_size=4, seq_len=5)
        >>> x, y = batches[0]  # (5, 4), (5, 4); x[:, 1] = 24 … 28, y[:, 1] = 25 … 29
    """

    def __init__(self, data: Tensor, batch_size: int, seq_len: int, name: str = "the text") -> None:
        N, T = batch_size, seq_len
        S = (len(data) - 1) // N if N > 0 else 0
        if S < T:
            raise ValueError(
                f"{name} is too short for one batch: {len(data)} characters, and a batch of "
                f"{N} streams × {T} steps needs at least {N * T + 1}"
            )
        self.batch_size, self.seq_len = N, T
        self.stream_len = S
        # (S + 1, N) time-major: stream n is data[n·S : (n + 1)·S + 1], the last character shared
        # with stream n + 1 (it is the target of stream n's last step, the input of n + 1's first).
        # Built from views (the first S characters of each stream, then each one's last), not from
        # an (S + 1, N) int64 index, which took as much memory again as the text's ids.
        starts = data[: N * S].view(N, S).t()  # (S, N): stream n's first S characters
        ends = data[S : N * S + 1 : S]  # (N,): character (n + 1)·S, the last of stream n
        self.streams = torch.cat([starts, ends.unsqueeze(0)])  # (S + 1, N), contiguous

    def __len__(self) -> int:
        """Batches per pass over the data."""
        return self.stream_len // self.seq_len

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        if not 0 <= k < len(self):
            raise IndexError(f"batch {k} of {len(self)}")
        t0 = k * self.seq_len
        return self.streams[t0 : t0 + self.seq_len], self.streams[t0 + 1 : t0 + self.seq_len + 1]

    def select(self, streams: slice, device: torch.device | str | None = None) -> StreamBatches:
        """The same batches restricted to some of the streams — a data-parallel rank's share,
        ``x[:, streams]`` of every batch — stored contiguously on ``device``. The selection may be
        empty (N = 0)."""
        part = copy.copy(self)
        part.streams = self.streams[:, streams].contiguous().to(device)
        part.batch_size = part.streams.shape[1]
        return part

    def chunks(self):
        """Every (x, y) of one pass in order, the last one shorter when T does not divide S; for
        evaluation, which covers all N·S predicted characters."""
        S, T = self.stream_len, self.seq_len
        for t0 in range(0, S, T):
            t1 = min(t0 + T, S)
            yield self.streams[t0:t1], self.streams[t0 + 1 : t1 + 1]
