"""Stage 1: from observations to a WorkloadProfile and its SLO."""
