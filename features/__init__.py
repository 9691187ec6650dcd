"""Transactions and their features: the dataset reader, one spec, offline and online engines."""
