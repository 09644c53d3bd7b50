"""Simulated devices and `sensegate demo`: never imported by the product's other parts."""
