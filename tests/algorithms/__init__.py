"""The algorithm contract every algorithm fulfils, the NaN diagnosis that replays each one's
own update, and the evaluation paths (the test curve, the no-graph evaluation)."""
