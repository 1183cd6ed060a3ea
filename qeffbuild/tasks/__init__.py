"""The tasks room: one package per model family; each package's __init__ is torch-free."""
