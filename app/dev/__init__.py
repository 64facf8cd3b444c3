"""Tools for developers and benchmarks; nothing here is used by the server itself."""
