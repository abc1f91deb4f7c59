"""Reports over the store: runs, carbon, cost, plots."""
