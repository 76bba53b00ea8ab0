"""Measuring artifacts against PyTorch and the hardware: `rvm parity`, `rvm bench`, `rvm profile` and
`rvm sensitivity`. Depends on the exporters, runtimes and media."""
