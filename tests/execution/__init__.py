"""How steps run: strategy=auto's cache, the native first-block kernel and its record in
results.json, DDP on CPU processes, and the benchmark's steps against metalab's."""
