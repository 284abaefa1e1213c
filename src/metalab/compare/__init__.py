"""``metalab-compare``: read many runs, group them by what differs, and report them side by
side with the published numbers (terminal table, Markdown, CSV, PNG plots, one HTML page)."""
