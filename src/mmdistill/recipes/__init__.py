"""Recipes: short, top-to-bottom functions that wire library components into pipeline stages."""
