"""Prometheus instruments."""
