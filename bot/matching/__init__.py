"""Matching: the theme/claim catalog, the matcher and excerpt picking (pure), and evaluation."""
