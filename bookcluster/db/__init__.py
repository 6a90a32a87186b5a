"""PostgreSQL schema: versioned migrations (tables, data) and the SQL functions."""
