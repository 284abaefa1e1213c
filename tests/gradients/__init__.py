"""Meta-gradients against float64 per-task references written with plain autograd: every
execution strategy (loop, vmap, hybrid, auto) and every algorithm (MAML family, Reptile,
the metric methods, Meta-LSTM)."""
