"""End-to-end training: metalab-train on sinusoid and Omniglot, each algorithm and data set,
resume after a kill, the CPU-time budget, the loggers a run writes to."""
