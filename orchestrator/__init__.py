"""Training orchestration: data, per-worker loop, Ray launcher, meters, the store, scheduling."""
