"""Trainer assembly: strategies, callbacks, run directories, and running a recipe's stages."""
