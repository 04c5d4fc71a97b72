"""Stage 1 and 2 of the agent: profile and SLO in, a kept (or rejected) policy out."""
