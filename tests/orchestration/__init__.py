"""Many runs at once: launchers and sweepers, sweeps that survive a failed job, run and job
names, one process per run directory, the reproduce presets."""
