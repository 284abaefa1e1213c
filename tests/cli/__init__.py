"""What a user types: the console scripts, every command of the README, the wheel and the
Docker image."""
