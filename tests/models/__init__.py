"""Backbones: shapes, published parameter counts, and Conv-4's block rewrites (the same
function as its layers, to every order)."""
