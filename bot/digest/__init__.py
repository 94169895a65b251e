"""Digests: gathering, grouping and ranking matches into neutral digest structures (pure)."""
