"""Where to train: the ranking lives in planners/regions.py (pure, used by `plan --regions`);
this name is kept for the scheduler side."""

from planners.regions import parse_region_prices, rank_regions  # noqa: F401
