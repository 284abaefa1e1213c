"""Bad and hostile input stops with one line naming the problem and the fix; the run
directory guard; runtime failures (NaN, signals, damaged checkpoints) lose nothing."""
