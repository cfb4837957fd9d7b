"""Training pieces: head targets from instance labels, losses, augmentation, the loop.

Import the submodules you need (``smallseg.train.targets``, ``smallseg.train.losses``,
``smallseg.train.augment``); this package imports nothing heavy itself.
"""
