"""Raw data -> numpy batches. No JAX in here."""
