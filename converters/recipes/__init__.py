"""Recipes: plain training scripts (train the built-in model)."""
