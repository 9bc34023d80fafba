"""Applications on the library: the command line (:mod:`~scratchrnn.apps.cli`), the benchmarks
(:mod:`~scratchrnn.apps.bench`), the lab's experiments (:mod:`~scratchrnn.apps.lab`) and the page
of hidden units (:mod:`~scratchrnn.apps.inspect`).

They use the library's public names only; the library never imports them.
"""
