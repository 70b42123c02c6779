"""Chemistry metrics: bond orders, EDM stability, RDKit validity, uniqueness and novelty."""
