"""An open-set benchmark from installed fonts: characters are the identities, fonts the writers.

``python -m benchmarks.glyphs build OUT`` renders it (see :mod:`.build`); ``python -m
benchmarks.glyphs run OUT --checkpoint C`` scores a checkpoint, raw pixels and a plain PML loop on
its three test conditions (see :mod:`.score`).
"""
