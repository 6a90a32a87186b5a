"""HTTP views. They parse, call a service, and return JSON; errors are raised, never built."""
