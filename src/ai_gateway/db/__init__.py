"""The database: an async SQLAlchemy engine from DATABASE_URL and its Alembic migrations."""
