"""The model pipeline shared by every family: load, export and compile nodes (torch-free) and their worker code."""
