"""Pure-Python planning: loss laws, sizing, hardware, footprint, memory. No torch, no Ray."""
