"""Measurement: A/B protocol, statistics, workloads and reports."""
