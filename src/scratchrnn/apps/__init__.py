"""Applications on the library: the command line (:mod:`~scratchrnn.apps.cli`), the benchmarks
(:mod:`~scratchrnn.apps.bench`) and the lab's experiments (:mod:`~scratchrnn.apps.lab`).

They use the library's public names only; the library never imports them.
"""
