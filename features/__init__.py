"""Feature definitions: one spec, an offline (polars) engine and an online engine."""
