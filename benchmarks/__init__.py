"""Benchmarks: scripts that measure and print tables (never imported by ``import attn``)."""
