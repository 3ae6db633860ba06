"""Tools built on the library: the command line, the stress workload, the tuner and the demo."""

