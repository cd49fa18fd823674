"""Recipes: the jobs that chain every stage of the method (`lwd demo`, `lwd experiment`) and
their presets."""
