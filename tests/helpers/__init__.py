"""Code the tests share: how to run the console scripts, the float64 references, small
problems and fake data sets, configs composed as metalab-train composes them. No tests here."""
