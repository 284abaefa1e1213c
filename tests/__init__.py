"""metalab's tests, by concern; shared code is in ``tests.helpers`` (imported as a package)."""
