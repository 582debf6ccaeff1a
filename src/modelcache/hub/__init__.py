"""Hub-shaped finding: repo names, the offline lookup of snapshots, reuse candidates, and fetching
through huggingface_hub (the download entry point, the one module here that may import `act`)."""
