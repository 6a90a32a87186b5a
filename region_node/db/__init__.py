"""PostgreSQL schema (versioned migrations) and the queries the node runs."""
