"""The benchmark's autocast rows (issue 21): scratchrnn against nn.RNN under the same autocast,
with both errors against float64 beside the speed; timings are not judged here."""

from __future__ import annotations

from scratchrnn.apps.bench import autocast, rnn


def test_autocast_rows_have_speed_and_error_of_both():
    rows = autocast.measure_autocast(rnn.QUICK_SHAPES, (1,), rounds=1)
    assert len(rows) == len(rnn.QUICK_SHAPES) * len(autocast.DTYPES) * 2
    for row in rows:
        assert all(row["ms"][v] > 0 for v in ("scratchrnn", "nn.RNN"))
        # bfloat16 keeps 8 bits: both errors of that order, neither far worse than the other.
        assert all(1e-4 < row["error"][v] < 5e-2 for v in ("scratchrnn", "nn.RNN"))
        assert row["error"]["scratchrnn"] < 3 * row["error"]["nn.RNN"]
    table = autocast.autocast_table(rows)
    assert table.count("\n") == len(rows) + 1 and "speed-up" in table and "nn.RNN error" in table
