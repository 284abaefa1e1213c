"""Config groups and presets compose with the published values, every setting has a type and
a range, every preset trains a few steps, Trainer flags pass through or are refused."""
