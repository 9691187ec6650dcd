"""Model training, evaluation, the versioned registry and the batch scorer."""
