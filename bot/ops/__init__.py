"""Operations: check, health, export/import, database migration, logging and metrics."""
