"""Feeds: fetch (HTTP adapter), parse (pure), schedule decisions (pure) and the poll pipeline."""
