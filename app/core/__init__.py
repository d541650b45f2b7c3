"""Settings, logging and metrics: the service's cross-cutting pieces."""
