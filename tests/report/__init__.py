"""metalab-compare: bookkeeping, malformed input, the report as a reader sees it, time to
accuracy; the table of published numbers."""
