"""Espalier's Amaranth gateware (one block per file). Imports Amaranth, never torch."""
