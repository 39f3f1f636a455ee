"""The offline program search (``rawdemosaic.search``): trains demosaicking programs in PyTorch and
regenerates the kernel registry. Needs the ``[search]`` extra (torch, ray)."""
