"""Storage: the schema, the engine, migrations, and narrow repositories over them."""
